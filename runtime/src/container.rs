//! Container records under `--root`, and their runc-style state.
//!
//! Layout:
//! - `<root>/<id>/` — libcontainer's state directory (state.json, notify socket).
//! - `<root>/.bundles/<id>/config.json` — the effective spec libcontainer runs
//!   (see [`crate::spec`]), and `rcrun.json` with what rcrun itself records
//!   (the user's bundle, the cgroups path, the init's start time).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use libcontainer::container::{Container, ContainerStatus};
use serde::{Deserialize, Serialize};

/// Directory under `--root` that holds the effective bundles.
pub const BUNDLES_DIR: &str = ".bundles";
const META_FILE: &str = "rcrun.json";
const MAX_ID_LEN: usize = 1024;

/// Rejects IDs that could escape `--root` or that runc rejects.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        bail!("invalid container id: empty");
    }
    if id.len() > MAX_ID_LEN {
        bail!("invalid container id: longer than {MAX_ID_LEN} bytes");
    }
    if id.contains('/') || id.contains("..") {
        bail!("invalid container id {id:?}: must not contain \"/\" or \"..\"");
    }
    if id.starts_with('.') {
        bail!("invalid container id {id:?}: must not start with \".\"");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        bail!("invalid container id {id:?}: character {c:?} is not allowed");
    }
    Ok(())
}

/// The `--root` directory.
#[derive(Clone, Debug)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(path: &Path) -> Root {
        Root(crate::fsutil::absolute(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates the root and the bundles directory (mode 0700).
    pub fn ensure(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.0.join(BUNDLES_DIR))
            .with_context(|| format!("create root {}", self.0.display()))
    }

    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.0.join(id)
    }

    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.0.join(BUNDLES_DIR).join(id)
    }

    /// IDs of all containers with a record under the root, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for dir in [self.0.clone(), self.0.join(BUNDLES_DIR)] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && e.path().is_dir() && !ids.contains(&name) {
                    ids.push(name);
                }
            }
        }
        ids.sort();
        ids
    }
}

/// What rcrun records about a container besides libcontainer's state.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Meta {
    /// The bundle the user gave (libcontainer sees the effective one).
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub cgroups_path: PathBuf,
    /// Start time (clock ticks since boot) of the init, to tell it from a
    /// process that reused its PID.
    #[serde(default)]
    pub init_start_time: Option<u64>,
}

impl Meta {
    pub fn load(root: &Root, id: &str) -> Option<Meta> {
        let data = std::fs::read(root.bundle_dir(id).join(META_FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Writes the record, once, when the container has been created (the
    /// file must not exist). Readers treat a missing or partial record as
    /// absent and fall back to libcontainer's state.
    pub fn save(&self, root: &Root, id: &str) -> Result<()> {
        let data = serde_json::to_vec(self)?;
        crate::fsutil::write_new(&root.bundle_dir(id).join(META_FILE), &data)
            .context("write container record")
    }
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/pid/stat).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // Fields after the command: state is field 3, start time field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A loaded container: libcontainer's record plus rcrun's.
pub struct Handle {
    pub id: String,
    pub root: Root,
    pub container: Container,
    pub meta: Meta,
}

impl Handle {
    /// Loads a container and refreshes its status from the live processes.
    pub fn load(root: &Root, id: &str) -> Result<Handle> {
        validate_id(id)?;
        let dir = root.state_dir(id);
        if !dir.join("state.json").exists() {
            bail!("container does not exist");
        }
        let container = Container::load(dir).context("load container state")?;
        let meta = Meta::load(root, id).unwrap_or_else(|| Meta {
            bundle: container.bundle().clone(),
            ..Meta::default()
        });
        let mut h = Handle {
            id: id.to_string(),
            root: root.clone(),
            container,
            meta,
        };
        h.refresh();
        Ok(h)
    }

    /// Marks the container stopped when its init is gone or its PID now
    /// belongs to another process.
    fn refresh(&mut self) {
        if self.container.status() == ContainerStatus::Stopped {
            return;
        }
        if let (Some(pid), Some(want)) = (self.container.pid(), self.meta.init_start_time) {
            if start_time(pid.as_raw()) != Some(want) {
                self.container.set_status(ContainerStatus::Stopped);
            }
        }
    }

    pub fn status(&self) -> ContainerStatus {
        self.container.status()
    }

    pub fn pid(&self) -> Option<i32> {
        self.container.pid().map(|p| p.as_raw())
    }

    /// The cgroups path libcontainer used.
    pub fn cgroups_path(&self) -> PathBuf {
        if !self.meta.cgroups_path.as_os_str().is_empty() {
            return self.meta.cgroups_path.clone();
        }
        self.container
            .spec()
            .map(|c| c.cgroup_path)
            .unwrap_or_else(|_| crate::spec::effective_cgroups_path(None, &self.id))
    }

    /// runc's `state` output.
    pub fn runc_state(&self, with_owner: bool) -> RuncState {
        let status = self.status();
        let pid = if status == ContainerStatus::Stopped {
            0
        } else {
            self.pid().unwrap_or(0)
        };
        let owner = if with_owner {
            self.container
                .state
                .creator
                .map(user_name)
                .unwrap_or_default()
        } else {
            String::new()
        };
        RuncState {
            oci_version: libcontainer::oci_spec::runtime::VERSION.to_string(),
            id: self.id.clone(),
            pid,
            status: status_name(status).to_string(),
            bundle: self.meta.bundle.clone(),
            rootfs: self.meta.rootfs.clone(),
            created: self
                .container
                .created()
                .map(format_time)
                .unwrap_or_default(),
            annotations: self.container.state.annotations.clone().unwrap_or_default(),
            owner,
        }
    }
}

/// runc's JSON for `state` and `list --format json`, fields in runc's order.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RuncState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    pub owner: String,
}

pub fn status_name(s: ContainerStatus) -> &'static str {
    match s {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// RFC 3339 with nanoseconds, trailing zeros trimmed (Go's RFC3339Nano).
pub fn format_time(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = format!("{:09}", t.timestamp_subsec_nanos());
    let nanos = nanos.trim_end_matches('0');
    if nanos.is_empty() {
        format!("{base}Z")
    } else {
        format!("{base}.{nanos}Z")
    }
}

/// The user name of a UID from /etc/passwd, or the number.
fn user_name(uid: u32) -> String {
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let mut f = line.split(':');
            let (Some(name), _, Some(u)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if u.parse::<u32>().ok() == Some(uid) {
                return name.to_string();
            }
        }
    }
    format!("#{uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2+x.y").is_ok());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("a..b").is_err());
        assert!(validate_id(".hidden").is_err());
        assert!(validate_id("").is_err());
        assert!(validate_id(&"x".repeat(1025)).is_err());
        assert!(validate_id(&"x".repeat(1024)).is_ok());
        assert!(validate_id("a b").is_err());
    }

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
    }

    #[test]
    fn time_format_trims_zeros() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.120Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_time(t), "2024-01-02T03:04:05.12Z");
    }
}
