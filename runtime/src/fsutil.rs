//! Small filesystem helpers.
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes a file so that readers see either the old or the new content
/// (temp file in the same directory, then rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Writes a file that must not exist yet (one exclusive write: for files in
/// a directory this process has just made, which nobody else writes to).
pub fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(data)
}

/// Removes a directory tree; a missing one is not an error (cleanup must be
/// idempotent).
pub fn remove_dir_all_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `p` made absolute against the current directory (as given if that
/// cannot be read).
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Removes a file when dropped (files that live only while an operation
/// runs: a process.json, a socket, a console link).
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Fails when a file rcrun is asked to write later (a `--pid-file`) has no
/// directory to go in: libcontainer would only log that it could not write
/// it, and the caller would wait for a file that never comes.
pub fn require_parent_dir(path: &Path, what: &str) -> anyhow::Result<()> {
    let path = absolute(path);
    match path.parent() {
        Some(dir) if !dir.is_dir() => anyhow::bail!(
            "{what} {}: directory {} does not exist",
            path.display(),
            dir.display()
        ),
        _ => Ok(()),
    }
}

/// A file a library is about to write for rcrun (a `--pid-file`), with what
/// it held before: undoing the operation puts that back, or removes the file
/// if there was none. (libcontainer writes the pid file early, before the
/// steps that can still fail.)
pub struct Overwrite {
    path: PathBuf,
    before: Option<Vec<u8>>,
}

impl Overwrite {
    pub fn begin(path: &Path) -> Overwrite {
        let path = absolute(path);
        let before = std::fs::read(&path).ok();
        Overwrite { path, before }
    }

    pub fn undo(&self) {
        let _ = match &self.before {
            Some(content) => std::fs::write(&self.path, content),
            None => std::fs::remove_file(&self.path),
        };
    }
}

/// Undoes an [`Overwrite`] when dropped, unless [`kept`](Self::keep).
pub struct UndoOnDrop(pub Overwrite);

impl UndoOnDrop {
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for UndoOnDrop {
    fn drop(&mut self) {
        self.0.undo();
    }
}
