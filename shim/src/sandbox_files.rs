//! The files a pod's containers share: /etc/hostname, /etc/hosts,
//! /etc/resolv.conf and a private /dev/shm (what containerd writes for a
//! sandbox; kubelet may mount its own managed /etc/hosts over ours).
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rcrun_proto::cri;

use crate::store::write_volatile;

/// Paths of a pod's shared files.
#[derive(Debug, Clone)]
pub struct SandboxFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub shm: PathBuf,
}

impl SandboxFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            shm: dir.join("shm"),
        }
    }
}

/// The pod's hostname: the config's, else the node's (as containerd does).
pub fn pod_hostname(config: &cri::PodSandboxConfig) -> String {
    if !config.hostname.is_empty() {
        return config.hostname.clone();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// resolv.conf content for `dns`; `None` means "copy the node's".
pub fn resolv_conf(dns: Option<&cri::DnsConfig>) -> Option<String> {
    let dns = dns?;
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return None;
    }
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Some(out)
}

/// Writes hostname, hosts and resolv.conf into the pod dir. `owner` is the
/// host (uid, gid) of the pod's root when the pod has its own user
/// namespace: the files are given to it, so that its root may rewrite them
/// as it could without a user namespace (containerd does the same).
pub fn write_files(
    files: &SandboxFiles,
    config: &cri::PodSandboxConfig,
    host_network: bool,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let hostname = pod_hostname(config);
    write_volatile(&files.hostname, format!("{hostname}\n").as_bytes())
        .with_context(|| format!("writing {}", files.hostname.display()))?;
    // hostNetwork pods see the node's hosts file, like containerd.
    let hosts = if host_network {
        std::fs::read("/etc/hosts").unwrap_or_else(|_| DEFAULT_HOSTS.as_bytes().to_vec())
    } else {
        DEFAULT_HOSTS.as_bytes().to_vec()
    };
    write_volatile(&files.hosts, &hosts)
        .with_context(|| format!("writing {}", files.hosts.display()))?;
    let resolv = match resolv_conf(config.dns_config.as_ref()) {
        Some(text) => text.into_bytes(),
        None => std::fs::read("/etc/resolv.conf").unwrap_or_default(),
    };
    write_volatile(&files.resolv_conf, &resolv)
        .with_context(|| format!("writing {}", files.resolv_conf.display()))?;
    if let Some(owner) = owner {
        for path in [&files.hostname, &files.hosts, &files.resolv_conf] {
            give_to_pod_root(path, owner)?;
        }
    }
    Ok(())
}

/// Gives `path` to the pod's root, the host `(uid, gid)` its user namespace
/// maps to ID 0.
pub fn give_to_pod_root(path: &Path, (uid, gid): (u32, u32)) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("giving {} to the pod's root", path.display()))
}

/// Mounts the pod's private /dev/shm tmpfs; `owner` as for [`write_files`].
pub fn mount_shm(path: &Path, size: u64, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let mut data = format!("mode=1777,size={size}");
    if let Some((uid, gid)) = owner {
        data.push_str(&format!(",uid={uid},gid={gid}"));
    }
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .with_context(|| format!("mounting the pod's shm tmpfs on {}", path.display()))
}

/// Unmounts whatever is mounted on `path` (repeatedly, for stacked mounts). Idempotent.
pub fn unmount_all(path: &Path) {
    for _ in 0..8 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unmounting");
                return;
            }
        }
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first, so that
/// removing `dir` never reaches into a mounted filesystem.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for point in points {
        unmount_all(&point);
    }
}

/// Removes `dir` and everything in it, after unmounting whatever is
/// mounted below it. A missing dir is fine.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    unmount_under(dir);
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path("/a\\040b\\134c"),
            PathBuf::from("/a b\\c")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = cri::DnsConfig {
            servers: vec!["10.0.0.10".into(), "10.0.0.11".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap(),
            "search ns.svc.cluster.local cluster.local\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n"
        );
        assert!(resolv_conf(None).is_none());
        assert!(resolv_conf(Some(&cri::DnsConfig::default())).is_none());
    }
}
