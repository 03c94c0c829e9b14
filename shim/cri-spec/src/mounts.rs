//! The container's mounts: the runtime defaults, the sandbox's files
//! (`/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`, `/dev/shm`) and the CRI
//! mounts, merged as containerd does; plus the masked and read-only path lists.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;
use rcrun_proto::cri;

use crate::error::SpecError;
use crate::input::SandboxInfo;

/// Paths kubelet masks for `procMount: Default` (and the infra process gets).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths kubelet makes read-only for `procMount: Default`.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub(crate) fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// The mounts every container gets (containerd's defaults without `/run`,
/// plus a read-only cgroup filesystem); privileged containers get `/sys` and
/// the cgroup filesystem read-write.
/// /proc, /dev and /dev/pts, as every container and the infra process get them.
pub(crate) fn proc_and_dev_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
    ]
}

pub(crate) fn default_mounts(privileged: bool) -> Vec<Mount> {
    let ro_or_rw = if privileged { "rw" } else { "ro" };
    let mut mounts = proc_and_dev_mounts();
    mounts.extend([
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", ro_or_rw],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro_or_rw],
        ),
    ]);
    mounts
}

/// A bind mount request, from the CRI or from the sandbox.
struct BindRequest<'a> {
    field: String,
    container_path: &'a str,
    host_path: &'a Path,
    readonly: bool,
    recursive_read_only: bool,
    propagation: i32,
    /// An idmapped mount with the container's user namespace (the volumes
    /// of a pod with its own user namespace, when the runtime can).
    idmap: bool,
}

/// The result of merging: the mounts in order and the rootfs propagation
/// some mount needs (`rslave`/`rshared`).
pub(crate) struct MountPlan {
    pub mounts: Vec<Mount>,
    pub rootfs_propagation: Option<String>,
}

/// Merges the defaults, the sandbox's files and the CRI mounts. A CRI mount
/// replaces a default or sandbox mount at the same path; a CRI `/dev`
/// replaces every default under `/dev`. CRI mounts go last, parents before
/// children.
pub(crate) fn plan_mounts(
    config: &cri::ContainerConfig,
    sandbox: &SandboxInfo,
    readonly_rootfs: bool,
    privileged: bool,
    host_ipc: bool,
) -> Result<MountPlan, SpecError> {
    let cri_paths: Vec<String> = config
        .mounts
        .iter()
        .map(|m| clean(&m.container_path))
        .collect();
    let in_cri = |p: &str| cri_paths.iter().any(|c| c == p);

    let host_shm = PathBuf::from("/dev/shm");
    // hostIPC pods see the host's /dev/shm, as they see its SysV IPC.
    let shm_source = if host_ipc {
        Some(host_shm.as_path())
    } else {
        sandbox.shm_dir.as_deref()
    };
    let sandbox_files: [(&str, Option<&Path>, bool); 4] = [
        (
            "/etc/hostname",
            sandbox.hostname_file.as_deref(),
            readonly_rootfs,
        ),
        ("/etc/hosts", sandbox.hosts_file.as_deref(), readonly_rootfs),
        (
            "/etc/resolv.conf",
            sandbox.resolv_conf.as_deref(),
            readonly_rootfs,
        ),
        ("/dev/shm", shm_source, false),
    ];
    let mut requests = Vec::new();
    for (dest, source, readonly) in sandbox_files {
        if let Some(source) = source {
            if !in_cri(dest) {
                requests.push(BindRequest {
                    field: format!("sandbox file for {dest}"),
                    container_path: dest,
                    host_path: source,
                    readonly,
                    recursive_read_only: false,
                    propagation: cri::MountPropagation::PropagationPrivate as i32,
                    // The pod's files are given to its root instead.
                    idmap: false,
                });
            }
        }
    }
    let sandbox_destinations: Vec<&str> = requests.iter().map(|r| r.container_path).collect();

    let mut mounts: Vec<Mount> = default_mounts(privileged)
        .into_iter()
        .filter(|m| {
            let dest = m.destination().to_string_lossy();
            let replaced_by_dev = in_cri("/dev") && dest.starts_with("/dev/");
            !in_cri(&dest) && !replaced_by_dev && !sandbox_destinations.contains(&dest.as_ref())
        })
        .collect();

    let mut cri_requests = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        if m.host_path.is_empty() {
            let reason = if m.image.is_some() {
                "image volume mounts must be resolved to a host path by the daemon"
            } else {
                "host_path is empty"
            };
            return Err(SpecError::invalid(format!("{field}.host_path"), reason));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            // The spec types of this crate (oci-spec 0.8) have no per-mount
            // uidMappings/gidMappings to carry them.
            return Err(SpecError::invalid(
                format!("{field}.uid_mappings"),
                "mappings of a mount's own are not supported (a pod's volumes are idmapped with the pod's user namespace)",
            ));
        }
        let idmap = sandbox.user_ns.as_ref().is_some_and(|u| u.idmap_volumes);
        cri_requests.push(BindRequest {
            field,
            container_path: &m.container_path,
            host_path: Path::new(&m.host_path),
            readonly: m.readonly,
            recursive_read_only: m.recursive_read_only,
            propagation: m.propagation,
            idmap,
        });
    }
    // Parents before children, keeping the request order otherwise.
    cri_requests.sort_by_key(|r| Path::new(&clean(r.container_path)).components().count());
    requests.extend(cri_requests);

    let mut rootfs_propagation: Option<String> = None;
    for r in &requests {
        mounts.push(bind_mount(r, &mut rootfs_propagation)?);
    }
    Ok(MountPlan {
        mounts,
        rootfs_propagation,
    })
}

fn bind_mount(
    r: &BindRequest,
    rootfs_propagation: &mut Option<String>,
) -> Result<Mount, SpecError> {
    if !r.container_path.starts_with('/') {
        return Err(SpecError::invalid(
            format!("{}.container_path", r.field),
            format!("{:?} is not absolute", r.container_path),
        ));
    }
    let source = match std::fs::canonicalize(r.host_path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpecError::MountSourceNotFound {
                path: r.host_path.to_path_buf(),
                container_path: r.container_path.to_string(),
            })
        }
        Err(source) => {
            return Err(SpecError::Io {
                path: r.host_path.to_path_buf(),
                source,
            })
        }
    };
    if r.recursive_read_only {
        if !r.readonly {
            return Err(SpecError::invalid(
                format!("{}.recursive_read_only", r.field),
                "a recursive read-only mount must be read-only",
            ));
        }
        if r.propagation != cri::MountPropagation::PropagationPrivate as i32 {
            return Err(SpecError::invalid(
                format!("{}.recursive_read_only", r.field),
                "a recursive read-only mount must have private propagation",
            ));
        }
    }
    let mut options = vec!["rbind".to_string()];
    match cri::MountPropagation::try_from(r.propagation) {
        Ok(cri::MountPropagation::PropagationPrivate) => options.push("rprivate".into()),
        Ok(cri::MountPropagation::PropagationHostToContainer) => {
            ensure_propagation(&r.field, &source, false)?;
            options.push("rslave".into());
            if rootfs_propagation.as_deref() != Some("rshared") {
                *rootfs_propagation = Some("rslave".into());
            }
        }
        Ok(cri::MountPropagation::PropagationBidirectional) => {
            ensure_propagation(&r.field, &source, true)?;
            options.push("rshared".into());
            *rootfs_propagation = Some("rshared".into());
        }
        Err(_) => {
            return Err(SpecError::invalid(
                format!("{}.propagation", r.field),
                format!("unknown propagation {}", r.propagation),
            ))
        }
    }
    options.push(if r.readonly { "ro" } else { "rw" }.into());
    if r.recursive_read_only {
        options.push("rro".into());
    }
    if r.idmap {
        // runtime-spec 1.2: idmapped with the container's user namespace
        // (no mappings of its own); rcrun and runc ≥ 1.2 make it.
        options.push("idmap".into());
    }
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(clean(r.container_path)));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(source));
    m.set_options(Some(options));
    Ok(m)
}

/// Bidirectional propagation needs the host path on a shared mount,
/// host-to-container on a shared or slave one; otherwise the container would
/// silently see no propagation.
fn ensure_propagation(field: &str, source: &Path, need_shared: bool) -> Result<(), SpecError> {
    let info_path = Path::new("/proc/self/mountinfo");
    let info = std::fs::read_to_string(info_path).map_err(|source| SpecError::Io {
        path: info_path.to_path_buf(),
        source,
    })?;
    let Some((mount_point, optional)) = containing_mount(&info, source) else {
        return Ok(());
    };
    let shared = optional.iter().any(|o| o.starts_with("shared:"));
    let slave = optional.iter().any(|o| o.starts_with("master:"));
    if shared || (!need_shared && slave) {
        return Ok(());
    }
    let wanted = if need_shared {
        "shared"
    } else {
        "shared or slave"
    };
    Err(SpecError::invalid(
        format!("{field}.propagation"),
        format!("{source:?} is on mount {mount_point:?}, which is not {wanted}"),
    ))
}

/// The mount point (and its optional fields) of the mount holding `path`:
/// the last-mounted entry with the longest matching mount point.
fn containing_mount(mountinfo: &str, path: &Path) -> Option<(PathBuf, Vec<String>)> {
    let mut best: Option<(PathBuf, Vec<String>)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 7 {
            continue;
        }
        let mount_point = PathBuf::from(unescape_mountinfo(fields[4]));
        if !path.starts_with(&mount_point) {
            continue;
        }
        let optional: Vec<String> = fields[6..]
            .iter()
            .take_while(|f| **f != "-")
            .map(|f| f.to_string())
            .collect();
        let longer = best
            .as_ref()
            .is_none_or(|(b, _)| mount_point.components().count() >= b.components().count());
        if longer {
            best = Some((mount_point, optional));
        }
    }
    best
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a//b/../c/` -> `/a/c` (lexically, as Go's filepath.Clean for absolute paths).
pub(crate) fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if p.starts_with('/') {
        format!("/{}", parts.join("/"))
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destinations(plan: &MountPlan) -> Vec<String> {
        plan.mounts
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect()
    }

    fn find<'a>(plan: &'a MountPlan, dest: &str) -> &'a Mount {
        plan.mounts
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("no mount at {dest}"))
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap()
    }

    fn cri_mount(host: &Path, container: &str) -> cri::Mount {
        cri::Mount {
            container_path: container.into(),
            host_path: host.to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    struct SandboxDir {
        dir: tempfile::TempDir,
        info: SandboxInfo,
    }

    fn sandbox() -> SandboxDir {
        let dir = tempfile::tempdir().unwrap();
        for f in ["hostname", "hosts", "resolv.conf"] {
            std::fs::write(dir.path().join(f), "x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("shm")).unwrap();
        let info = SandboxInfo {
            hostname_file: Some(dir.path().join("hostname")),
            hosts_file: Some(dir.path().join("hosts")),
            resolv_conf: Some(dir.path().join("resolv.conf")),
            shm_dir: Some(dir.path().join("shm")),
            ..Default::default()
        };
        SandboxDir { dir, info }
    }

    #[test]
    fn defaults_and_sandbox_files() {
        let sb = sandbox();
        let plan = plan_mounts(
            &cri::ContainerConfig::default(),
            &sb.info,
            false,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            destinations(&plan),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm"
            ]
        );
        let sys = find(&plan, "/sys");
        assert!(opts(sys).contains(&"ro".to_string()));
        assert!(opts(find(&plan, "/sys/fs/cgroup")).contains(&"ro".to_string()));
        let shm = find(&plan, "/dev/shm");
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(
            shm.source().as_deref(),
            Some(sb.dir.path().join("shm").canonicalize().unwrap().as_path())
        );
        assert_eq!(opts(shm), ["rbind", "rprivate", "rw"]);
        assert_eq!(opts(find(&plan, "/etc/hosts")), ["rbind", "rprivate", "rw"]);
        assert!(plan.rootfs_propagation.is_none());
    }

    #[test]
    fn sandbox_files_follow_readonly_rootfs() {
        let sb = sandbox();
        let plan = plan_mounts(
            &cri::ContainerConfig::default(),
            &sb.info,
            true,
            false,
            false,
        )
        .unwrap();
        for dest in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
            assert_eq!(opts(find(&plan, dest)).last().unwrap(), "ro", "{dest}");
        }
        assert_eq!(opts(find(&plan, "/dev/shm")).last().unwrap(), "rw");
    }

    #[test]
    fn no_sandbox_shm_keeps_tmpfs_and_host_ipc_uses_host_shm() {
        let info = SandboxInfo::default();
        let plan =
            plan_mounts(&cri::ContainerConfig::default(), &info, false, false, false).unwrap();
        assert_eq!(find(&plan, "/dev/shm").typ().as_deref(), Some("tmpfs"));
        let plan =
            plan_mounts(&cri::ContainerConfig::default(), &info, false, false, true).unwrap();
        let shm = find(&plan, "/dev/shm");
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
    }

    #[test]
    fn privileged_gets_writable_sys_and_cgroup() {
        let plan = plan_mounts(
            &cri::ContainerConfig::default(),
            &SandboxInfo::default(),
            false,
            true,
            false,
        )
        .unwrap();
        assert!(opts(find(&plan, "/sys")).contains(&"rw".to_string()));
        assert!(opts(find(&plan, "/sys/fs/cgroup")).contains(&"rw".to_string()));
    }

    #[test]
    fn cri_mounts_readonly_and_sorted_parents_first() {
        let sb = sandbox();
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("sub")).unwrap();
        let mut deep = cri_mount(&host.path().join("sub"), "/data/sub");
        deep.readonly = true;
        let config = cri::ContainerConfig {
            mounts: vec![deep, cri_mount(host.path(), "/data/")],
            ..Default::default()
        };
        let plan = plan_mounts(&config, &sb.info, false, false, false).unwrap();
        let d = destinations(&plan);
        let data = d.iter().position(|x| x == "/data").unwrap();
        let sub = d.iter().position(|x| x == "/data/sub").unwrap();
        assert!(data < sub && sub == d.len() - 1);
        assert_eq!(opts(find(&plan, "/data/sub")), ["rbind", "rprivate", "ro"]);
        assert_eq!(opts(find(&plan, "/data")), ["rbind", "rprivate", "rw"]);
    }

    #[test]
    fn cri_mount_replaces_default_and_sandbox_mounts() {
        let sb = sandbox();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("hosts"), "").unwrap();
        let config = cri::ContainerConfig {
            mounts: vec![
                cri_mount(&host.path().join("hosts"), "/etc/hosts"),
                cri_mount(host.path(), "/dev"),
            ],
            ..Default::default()
        };
        let plan = plan_mounts(&config, &sb.info, false, false, false).unwrap();
        let d = destinations(&plan);
        assert_eq!(d.iter().filter(|x| *x == "/etc/hosts").count(), 1);
        assert_eq!(
            find(&plan, "/etc/hosts").source().as_deref(),
            Some(host.path().join("hosts").canonicalize().unwrap().as_path())
        );
        assert!(
            !d.iter().any(|x| x == "/dev/pts" || x == "/dev/mqueue"),
            "{d:?}"
        );
        assert_eq!(find(&plan, "/dev").typ().as_deref(), Some("bind"));
    }

    #[test]
    fn missing_host_path_is_not_found() {
        let config = cri::ContainerConfig {
            mounts: vec![cri_mount(Path::new("/nonexistent/rcrun-test"), "/data")],
            ..Default::default()
        };
        let e = plan_mounts(&config, &SandboxInfo::default(), false, false, false)
            .err()
            .unwrap();
        assert!(matches!(e, SpecError::MountSourceNotFound { .. }), "{e}");
        assert_eq!(e.kind(), crate::SpecErrorKind::NotFound);
    }

    #[test]
    fn relative_container_path_is_invalid() {
        let host = tempfile::tempdir().unwrap();
        let config = cri::ContainerConfig {
            mounts: vec![cri_mount(host.path(), "data")],
            ..Default::default()
        };
        let e = plan_mounts(&config, &SandboxInfo::default(), false, false, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("mounts[0].container_path"), "{e}");
    }

    #[test]
    fn recursive_read_only_rules() {
        let host = tempfile::tempdir().unwrap();
        let mut m = cri_mount(host.path(), "/data");
        m.recursive_read_only = true;
        let config = |m: cri::Mount| cri::ContainerConfig {
            mounts: vec![m],
            ..Default::default()
        };
        let e = plan_mounts(
            &config(m.clone()),
            &SandboxInfo::default(),
            false,
            false,
            false,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("must be read-only"), "{e}");
        m.readonly = true;
        let plan = plan_mounts(
            &config(m.clone()),
            &SandboxInfo::default(),
            false,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            opts(find(&plan, "/data")),
            ["rbind", "rprivate", "ro", "rro"]
        );
        m.propagation = cri::MountPropagation::PropagationHostToContainer as i32;
        let e = plan_mounts(&config(m), &SandboxInfo::default(), false, false, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("private propagation"), "{e}");
    }

    #[test]
    fn propagation_options_and_rootfs_propagation() {
        // "/" is a shared mount on a systemd host; the check reads this process's mountinfo.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let (_, optional) = containing_mount(&info, Path::new("/tmp")).unwrap();
        if !optional.iter().any(|o| o.starts_with("shared:")) {
            eprintln!("/tmp is not on a shared mount here; skipping the positive case");
            return;
        }
        let host = tempfile::tempdir().unwrap();
        let mut slave = cri_mount(host.path(), "/slave");
        slave.propagation = cri::MountPropagation::PropagationHostToContainer as i32;
        let config = cri::ContainerConfig {
            mounts: vec![slave.clone()],
            ..Default::default()
        };
        let plan = plan_mounts(&config, &SandboxInfo::default(), false, false, false).unwrap();
        assert_eq!(opts(find(&plan, "/slave")), ["rbind", "rslave", "rw"]);
        assert_eq!(plan.rootfs_propagation.as_deref(), Some("rslave"));
        let mut shared = cri_mount(host.path(), "/shared");
        shared.propagation = cri::MountPropagation::PropagationBidirectional as i32;
        let config = cri::ContainerConfig {
            mounts: vec![shared, slave],
            ..Default::default()
        };
        let plan = plan_mounts(&config, &SandboxInfo::default(), false, false, false).unwrap();
        assert_eq!(opts(find(&plan, "/shared")), ["rbind", "rshared", "rw"]);
        assert_eq!(plan.rootfs_propagation.as_deref(), Some("rshared"));
    }

    #[test]
    fn bidirectional_on_a_private_mount_is_rejected() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    30 22 0:40 / /priv rw,relatime - tmpfs tmpfs rw\n\
                    31 22 0:41 / /sl\\040ave rw master:7 - tmpfs tmpfs rw\n";
        let (mp, opt) = containing_mount(info, Path::new("/priv/x")).unwrap();
        assert_eq!((mp, opt.len()), (PathBuf::from("/priv"), 0));
        let (mp, opt) = containing_mount(info, Path::new("/sl ave/y")).unwrap();
        assert_eq!(
            (mp, opt),
            (PathBuf::from("/sl ave"), vec!["master:7".to_string()])
        );
        let (mp, _) = containing_mount(info, Path::new("/other")).unwrap();
        assert_eq!(mp, PathBuf::from("/"));
    }

    #[test]
    fn image_volume_without_host_path_is_invalid() {
        let config = cri::ContainerConfig {
            mounts: vec![cri::Mount {
                container_path: "/img".into(),
                image: Some(cri::ImageSpec::default()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = plan_mounts(&config, &SandboxInfo::default(), false, false, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("image volume"), "{e}");
    }

    #[test]
    fn volumes_of_a_user_namespaced_pod_are_idmapped_when_the_runtime_can() {
        let mut sb = sandbox();
        let volume = tempfile::tempdir().unwrap();
        let config = cri::ContainerConfig {
            mounts: vec![cri::Mount {
                readonly: true,
                ..cri_mount(volume.path(), "/data")
            }],
            ..Default::default()
        };
        let one = crate::userns::IdMapping {
            container_id: 0,
            host_id: 1000,
            length: 65536,
        };
        let mut userns = crate::userns::PodUserNamespace {
            path: "/run/rcrun/pod/x/ns/user".into(),
            mappings: crate::userns::PodIdMappings {
                uids: one,
                gids: one,
            },
            idmap_volumes: false,
        };
        for (idmap_volumes, idmapped) in [(false, false), (true, true)] {
            userns.idmap_volumes = idmap_volumes;
            sb.info.user_ns = Some(userns.clone());
            let plan = plan_mounts(&config, &sb.info, false, false, false).unwrap();
            let data = plan
                .mounts
                .iter()
                .find(|m| m.destination() == Path::new("/data"))
                .unwrap();
            assert_eq!(opts(data).contains(&"idmap".to_string()), idmapped);
            assert!(opts(data).contains(&"ro".to_string()));
            // The pod's own files are given to its root, never idmapped.
            for m in &plan.mounts {
                if m.destination() != Path::new("/data") {
                    assert!(!opts(m).contains(&"idmap".to_string()), "{m:?}");
                }
            }
        }
        // Not in a pod without a user namespace.
        sb.info.user_ns = None;
        let plan = plan_mounts(&config, &sb.info, false, false, false).unwrap();
        assert!(plan
            .mounts
            .iter()
            .all(|m| !opts(m).contains(&"idmap".to_string())));
        // A mount's own mappings cannot be carried.
        let own = cri::ContainerConfig {
            mounts: vec![cri::Mount {
                uid_mappings: vec![cri::IdMapping {
                    container_id: 0,
                    host_id: 1000,
                    length: 1,
                }],
                ..cri_mount(volume.path(), "/data")
            }],
            ..Default::default()
        };
        let e = plan_mounts(&own, &sb.info, false, false, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("mounts[0].uid_mappings"), "{e}");
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/a//b/../c/"), "/a/c");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("/dev/"), "/dev");
    }
}
