//! The mount table of the calling process's mount namespace, from
//! `/proc/self/mountinfo`.
use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The fields of a mountinfo line that rcrun uses.
#[derive(Debug, PartialEq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// Per-superblock options (`rw,cpu,cpuacct` for a v1 cgroup hierarchy).
    pub super_options: String,
}

/// Reads the mount table of this process's mount namespace.
pub fn read() -> Result<Vec<Mount>> {
    Ok(parse(&read_proc_self("mountinfo")?))
}

/// Reads `/proc/self/<name>`, from a file verified to live on a real procfs
/// (what a /proc overmounted by something else could not pass).
pub fn read_proc_self(name: &str) -> Result<String> {
    let path = format!("/proc/self/{name}");
    let mut f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    let fs = nix::sys::statfs::fstatfs(&f).with_context(|| format!("statfs {path}"))?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        bail!("/proc is not a procfs");
    }
    let mut text = String::new();
    f.read_to_string(&mut text)
        .with_context(|| format!("read {path}"))?;
    Ok(text)
}

/// Parses mountinfo lines: `id parent dev root mount-point options
/// [optional fields] - fstype source super-options`.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            let mut post = after.split(' ');
            let fs_type = post.next()?;
            let super_options = post.nth(1).unwrap_or_default();
            Some(Mount {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: fs_type.to_string(),
                super_options: super_options.to_string(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space; also tab, newline
/// and backslash).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trailing\\040"), "/trailing ");
    }

    #[test]
    fn lines() {
        let text = "36 25 0:32 / /sys/fs/cgroup/my\\040cpu rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
22 27 0:21 / /proc rw,relatime - proc proc rw
garbage
";
        assert_eq!(
            parse(text),
            vec![
                Mount {
                    mount_point: PathBuf::from("/sys/fs/cgroup/my cpu"),
                    fs_type: "cgroup".into(),
                    super_options: "rw,cpu,cpuacct".into(),
                },
                Mount {
                    mount_point: PathBuf::from("/proc"),
                    fs_type: "proc".into(),
                    super_options: "rw".into(),
                },
            ]
        );
    }
}
