//! Loading and validating a bundle's `config.json`, and the effective spec
//! rcrun hands to libcontainer.
//!
//! libcontainer reads `config.json` from the bundle directory it is given, so
//! rcrun writes the *effective* spec (absolute rootfs, a cgroups path that is
//! always set, an `oomScoreAdj` the caller may set, bind sources made absolute)
//! into its own per-container bundle directory and passes that one. The
//! user's bundle is recorded next to it (see [`crate::container`]).
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

/// Where containers' cgroups go when `linux.cgroupsPath` is unset or relative:
/// `/rcrun/<id>` and `/rcrun/<relative path>` under each hierarchy's root.
pub const CGROUP_PARENT: &str = "/rcrun";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("bundle {0}: no such directory")]
    NoBundle(PathBuf),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config.json: {0}")]
    Parse(String),
    #[error("config.json: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads and parses `<bundle>/config.json`; parse errors name the JSON path
/// of the offending field.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    if !bundle.is_dir() {
        return Err(SpecError::NoBundle(bundle.to_path_buf()));
    }
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&data)
}

/// Parses config.json bytes into a spec.
pub fn parse(data: &[u8]) -> Result<Spec, SpecError> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            SpecError::Parse(inner.to_string())
        } else {
            SpecError::Parse(format!("{path}: {inner}"))
        }
    })
}

/// Whether the container runs in a user namespace of its own (created or
/// joined by path): idmapped mounts may then use it, and exec must join it.
pub fn has_user_namespace(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User))
}

/// The checks of [`validate`] that apply to any process (the container's,
/// or one given to `exec --process`): fields named as `process.*`.
pub fn validate_process(process: &Process) -> Result<(), SpecError> {
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(invalid("process.args", "must name a command")),
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(
            "process.cwd",
            format!("{:?} is not an absolute path", process.cwd()),
        ));
    }
    if let Some(env) = process.env() {
        for e in env {
            if !e.contains('=') {
                return Err(invalid("process.env", format!("{e:?} is not KEY=value")));
            }
        }
    }
    if let Some(rlimits) = process.rlimits() {
        for rl in rlimits {
            if rl.soft() > rl.hard() {
                return Err(invalid(
                    "process.rlimits",
                    format!(
                        "{:?}: soft limit {} exceeds hard limit {}",
                        rl.typ(),
                        rl.soft(),
                        rl.hard()
                    ),
                ));
            }
            check_rlimit_allowed(rl.typ() as i32, rl.hard()).map_err(|reason| {
                invalid("process.rlimits", format!("{:?}: {reason}", rl.typ()))
            })?;
        }
    }
    Ok(())
}

/// Checks what libcontainer would otherwise reject late or with a vague
/// message, naming the field.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    validate_version(spec.version())?;

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing"))?;
    validate_process(process)?;

    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing"))?;
    let rootfs = resolve(bundle, root.path());
    if !rootfs.is_dir() {
        return Err(invalid(
            "root.path",
            format!("rootfs {} does not exist", rootfs.display()),
        ));
    }

    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux", "missing"))?;
    let userns = has_user_namespace(spec);

    if let Some(mounts) = spec.mounts() {
        for (i, m) in mounts.iter().enumerate() {
            if !m.destination().is_absolute() {
                return Err(invalid(
                    format!("mounts[{i}].destination"),
                    format!("{:?} is not an absolute path", m.destination()),
                ));
            }
            if crate::idmap::is_idmapped(m) {
                crate::idmap::check(m, userns).map_err(|r| invalid(format!("mounts[{i}]"), r))?;
                // The hook that makes it opens the source; say now if it is not there.
                let source = resolve(bundle, m.source().as_deref().unwrap_or(Path::new("")));
                if !source.exists() {
                    return Err(invalid(
                        format!("mounts[{i}].source"),
                        format!("{} does not exist", source.display()),
                    ));
                }
            }
        }
    }

    let mut seen = HashSet::new();
    let mut has_mount_ns = false;
    let mut new_userns = false;
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        if !seen.insert(ns.typ()) {
            return Err(invalid(
                "linux.namespaces",
                format!("namespace {:?} given twice", ns.typ()),
            ));
        }
        if ns.typ() == LinuxNamespaceType::Mount {
            has_mount_ns = true;
        }
        if let Some(p) = ns.path() {
            if !p.exists() {
                return Err(invalid(
                    "linux.namespaces",
                    format!(
                        "{:?} namespace path {} does not exist",
                        ns.typ(),
                        p.display()
                    ),
                ));
            }
        } else if ns.typ() == LinuxNamespaceType::User {
            new_userns = true;
        }
    }
    if !has_mount_ns {
        // Without one, every mount of the rootfs set-up would land in the host.
        return Err(invalid("linux.namespaces", "a mount namespace is required"));
    }
    if new_userns
        && (linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
            || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty()))
    {
        return Err(invalid(
            "linux.uidMappings",
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    if let Some(p) = linux.rootfs_propagation() {
        if !p.is_empty() && rootfs_propagation(p).is_none() {
            return Err(invalid(
                "linux.rootfsPropagation",
                format!("unknown propagation {p:?}"),
            ));
        }
    }
    if let Some(cg) = linux.cgroups_path() {
        if cg.components().any(|c| c == Component::ParentDir) {
            return Err(invalid("linux.cgroupsPath", "must not contain \"..\""));
        }
        // "/", "." and the like name a hierarchy's root or the parent of
        // every rcrun container: tearing such a container down would kill
        // what is not the container's.
        if !cg.as_os_str().is_empty() && !cg.components().any(|c| matches!(c, Component::Normal(_)))
        {
            return Err(invalid(
                "linux.cgroupsPath",
                format!("{:?} names no cgroup of its own", cg.display().to_string()),
            ));
        }
    }

    if let Some(hooks) = spec.hooks() {
        let all = [
            ("hooks.prestart", hooks.prestart()),
            ("hooks.createRuntime", hooks.create_runtime()),
            ("hooks.createContainer", hooks.create_container()),
            ("hooks.startContainer", hooks.start_container()),
            ("hooks.poststart", hooks.poststart()),
            ("hooks.poststop", hooks.poststop()),
        ];
        for (name, list) in all {
            for h in list.as_deref().unwrap_or_default() {
                if !h.path().is_absolute() {
                    return Err(invalid(
                        name,
                        format!("hook path {:?} is not absolute", h.path()),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_version(v: &str) -> Result<(), SpecError> {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.parse::<u32>().is_ok());
    if !numeric {
        return Err(invalid("ociVersion", format!("{v:?} is not a version")));
    }
    if parts[0] != "1" {
        return Err(invalid(
            "ociVersion",
            format!("unsupported version {v:?} (rcrun supports 1.x)"),
        ));
    }
    Ok(())
}

/// Raising a hard rlimit above our own needs CAP_SYS_RESOURCE, which root on
/// some machines does not have; say so before the container half-starts.
fn check_rlimit_allowed(resource: i32, hard: u64) -> Result<(), String> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(resource as _, &mut cur) } != 0 {
        return Err("unknown resource".into());
    }
    if resource == libc::RLIMIT_NOFILE as i32 {
        // Not even CAP_SYS_RESOURCE raises it above the kernel's ceiling.
        if let Some(nr_open) = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&max| hard > max)
        {
            return Err(format!("hard limit {hard} exceeds fs.nr_open ({nr_open})"));
        }
    }
    if hard > cur.rlim_max && !has_sys_resource() {
        return Err(format!(
            "hard limit {hard} exceeds the runtime's own hard limit {} and raising it needs CAP_SYS_RESOURCE",
            cur.rlim_max
        ));
    }
    Ok(())
}

fn has_sys_resource() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false)
}

fn resolve(bundle: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        bundle.join(p)
    }
}

/// The cgroups path a container gets: absolute paths as given, relative ones
/// and an unset one under [`CGROUP_PARENT`].
pub fn effective_cgroups_path(given: Option<&Path>, id: &str) -> PathBuf {
    match given {
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) if !p.as_os_str().is_empty() => Path::new(CGROUP_PARENT).join(p),
        _ => Path::new(CGROUP_PARENT).join(id),
    }
}

/// Turns a validated spec into the one libcontainer gets.
pub fn make_effective(spec: &mut Spec, bundle: &Path, id: &str) -> Result<(), SpecError> {
    let root = spec
        .root()
        .clone()
        .ok_or_else(|| invalid("root", "missing"))?;
    let rootfs = resolve(bundle, root.path())
        .canonicalize()
        .map_err(|e| invalid("root.path", e.to_string()))?;
    let mut root = root;
    root.set_path(rootfs);
    spec.set_root(Some(root));

    if let Some(mounts) = spec.mounts().clone() {
        let mounts = mounts
            .into_iter()
            .map(|mut m| {
                if crate::idmap::is_bind(&m) {
                    if let Some(src) = m.source().clone() {
                        if src.is_relative() {
                            m.set_source(Some(bundle.join(src)));
                        }
                    }
                }
                m
            })
            .collect();
        spec.set_mounts(Some(mounts));
    }

    if let Some(linux) = spec.linux_mut() {
        let path = effective_cgroups_path(linux.cgroups_path().as_deref(), id);
        linux.set_cgroups_path(Some(path));
        // `runbindable` stays: the rootfs set-up plan (container_setup)
        // turns it into what libcontainer understands and does the rest.
        let propagation = linux.rootfs_propagation().as_deref().and_then(|p| match p {
            "runbindable" => Some(p),
            _ => rootfs_propagation(p),
        });
        linux.set_rootfs_propagation(propagation.map(String::from));
    }

    if let Some(process) = spec.process_mut() {
        if process.no_new_privileges() == Some(false) {
            // libcontainer installs seccomp after dropping capabilities
            // whenever the field is present, even `false`, which fails
            // without CAP_SYS_ADMIN; absent means the same and keeps the
            // privileged order.
            process.set_no_new_privileges(None);
        }
        if let Some(want) = process.oom_score_adj() {
            let allowed = clamp_oom_score_adj(want);
            if allowed != want {
                tracing::warn!(
                    "oomScoreAdj {want} is below what the runtime may set; using {allowed}"
                );
                process.set_oom_score_adj(Some(allowed));
            }
        }
    }
    Ok(())
}

/// The `linux.rootfsPropagation` libcontainer understands for a value runc
/// accepts. libcontainer always applies it recursively (MS_REC) to the mounts
/// before the rootfs set-up, so the `r` forms mean the same; for
/// `unbindable` it keeps the mounts slaves and makes only the new root
/// unbindable. `runbindable` (every mount unbindable) is finished by the
/// container set-up hook.
pub fn rootfs_propagation(value: &str) -> Option<&'static str> {
    match value.strip_prefix('r').unwrap_or(value) {
        "shared" => Some("shared"),
        "slave" => Some("slave"),
        "private" => Some("private"),
        "unbindable" => Some("unbindable"),
        _ => None,
    }
}

/// Lowering `oom_score_adj` below our own needs CAP_SYS_RESOURCE; without it
/// the lowest value we may set is our current one (containerd's
/// `restrict_oom_score_adj`).
pub fn clamp_oom_score_adj(want: i32) -> i32 {
    if has_sys_resource() {
        return want;
    }
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    want.max(own)
}

/// Writes a spec as pretty JSON (`config.json`).
pub fn save(spec: &Spec, path: &Path) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(path, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_field() {
        let err =
            parse(br#"{"ociVersion":"1.0.0","process":{"user":{"uid":"x","gid":0},"cwd":"/"}}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("process.user.uid"), "{err}");
    }

    #[test]
    fn malformed_json_is_reported() {
        let err = parse(b"{not json").unwrap_err().to_string();
        assert!(err.starts_with("config.json:"), "{err}");
    }

    #[test]
    fn versions() {
        assert!(validate_version("1.0.2-dev").is_ok());
        assert!(validate_version("1.2.0").is_ok());
        assert!(validate_version("2.0.0").is_err());
        assert!(validate_version("banana").is_err());
    }

    #[test]
    fn cgroups_paths() {
        assert_eq!(effective_cgroups_path(None, "a"), PathBuf::from("/rcrun/a"));
        assert_eq!(
            effective_cgroups_path(Some(Path::new("x/y")), "a"),
            PathBuf::from("/rcrun/x/y")
        );
        assert_eq!(
            effective_cgroups_path(Some(Path::new("/k8s/p")), "a"),
            PathBuf::from("/k8s/p")
        );
    }
}
