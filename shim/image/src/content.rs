//! Content-addressed blob store: `blobs/sha256/<hex>`, written under a temp
//! name and committed by rename once the digest has been verified. A blob is
//! fsynced before the rename and the directory after it, so a committed blob
//! survives a power loss with its content (image records point at it).

use crate::digest::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique within the store's temp dir (pid + counter + time).
pub fn temp_name(tmp: &Path, prefix: &str) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    tmp.join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()))
}

impl ContentStore {
    pub fn new(root: &Path, tmp: &Path) -> std::io::Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)?;
        Ok(Self {
            blobs,
            tmp: tmp.to_path_buf(),
        })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn read(&self, digest: &Digest) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(digest))
    }

    pub fn temp_path(&self, prefix: &str) -> PathBuf {
        temp_name(&self.tmp, prefix)
    }

    /// Stores `bytes` after checking they hash to `digest`.
    pub fn write_verified(&self, digest: &Digest, bytes: &[u8]) -> Result<(), String> {
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(format!(
                "digest mismatch for {digest}: content hashes to {actual}"
            ));
        }
        if self.has(digest) {
            return Ok(());
        }
        let temp = self.temp_path("blob");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&temp)?;
            f.write_all(bytes)?;
            self.commit(&temp, digest)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("storing blob {digest}: {e}")
        })
    }

    /// Makes a verified temp file durable and moves it into place.
    pub fn commit(&self, temp: &Path, digest: &Digest) -> std::io::Result<()> {
        std::fs::File::open(temp)?.sync_all()?;
        std::fs::rename(temp, self.path(digest))?;
        std::fs::File::open(&self.blobs)?.sync_all()
    }

    pub fn list(&self) -> Vec<Digest> {
        let Ok(dir) = std::fs::read_dir(&self.blobs) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| {
                Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())).ok()
            })
            .collect()
    }
}
