//! The image side of rcrun-cri: registry pulls, a content-addressed blob
//! store, layer snapshots keyed by chain ID, container rootfs overlays,
//! garbage collection and OCI/docker archive import.
//!
//! The daemon (`rcrun-cri`) only uses the API re-exported here.
//!
//! On disk, under the store's root:
//! - `blobs/sha256/<hex>`: manifests, configs and layer blobs, verified;
//! - `snapshots/<chain id hex>`: one layer's diff each, in overlayfs form;
//! - `metadata.json`: images, names and rootfs holds (replaced atomically);
//! - `tmp/`: everything half-written (emptied by `open`); `lock`.
//!
//! Additions to the original contract, for the daemon:
//! - [`ImageStore::pull_with_progress`]: `pull` with a per-layer progress
//!   callback (for the CLI's progress bars);
//! - [`ImageStore::open_with_tuning`]: `open` with timeouts/retries/parallelism;
//! - [`ImageStore::gc`]: an explicit garbage collection;
//! - cancellation needs no call: dropping the future of `pull` cancels it
//!   (shared work stops when its last waiter is gone).

mod content;
mod digest;
mod flight;
mod import;
mod ingest;
mod manifest;
mod metadata;
mod oauth;
mod pull;
pub mod reference;
mod registry;
mod rootfs;
mod snapshots;
mod store;
mod unpack;

pub use registry::PullTuning;

use futures::FutureExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors of the image store. The daemon maps them to gRPC codes:
/// `NotFound` -> NOT_FOUND, `Unauthorized` -> UNAUTHENTICATED,
/// `InvalidReference` -> INVALID_ARGUMENT, `InUse` -> FAILED_PRECONDITION, rest -> INTERNAL/UNAVAILABLE.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("unauthorized pulling {reference:?}: {message}")]
    Unauthorized { reference: String, message: String },
    #[error("image {0:?} is in use by a container")]
    InUse(String),
    /// The pull's `AuthConfig` cannot be read.
    #[error("invalid auth config: {0}")]
    InvalidAuth(String),
    #[error("{0}")]
    Other(String),
}

/// Registry mirrors and plain-http hosts, from the daemon's TOML config.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `registry host -> endpoints tried in order` (e.g. "registry.k8s.io" ->
    /// ["http://127.0.0.1:5000"]). An endpoint is `[http[s]://]host[:port][/path]`;
    /// a path is where the registry API sits below (`/path/v2/...`, as
    /// containerd's hosts.toml; a trailing `/v2` may be given or left out).
    /// Images pulled through a mirror keep their own names.
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
    /// Hosts (host[:port]) spoken to over plain http.
    pub insecure: Vec<String>,
    /// Registry hosts (or "*") reached only through their mirrors, never
    /// directly (hosts.toml with `server` = the mirror). By default the
    /// original host is tried after its mirrors, as containerd does.
    pub mirror_only: Vec<String>,
}

/// How the rootfs of a container in a pod's own user namespace is mounted.
#[derive(Debug, Clone, Copy)]
pub struct RootfsIdmap<'a> {
    /// The pod's user namespace (a `/proc/<pid>/ns/user` or a pinned file):
    /// the image layers are mounted idmapped with it (as containerd 2.x).
    pub userns: &'a Path,
    /// Host uid and gid of the container's root: the writable layer's owner.
    pub root: (u32, u32),
}

/// Credentials from the CRI `AuthConfig`.
#[derive(Debug, Clone, Default)]
pub struct PullAuth {
    pub username: String,
    pub password: String,
    /// base64("user:password"), as kubelet may send it instead.
    pub auth: String,
    /// An OAuth2 refresh token: exchanged at the registry's token server
    /// (`grant_type=refresh_token`) for a bearer token, renewed when it
    /// expires during a pull.
    pub identity_token: String,
    /// A bearer token sent as it is.
    pub registry_token: String,
    /// The registry the credentials are for (`host[:port]`, optionally with
    /// a scheme and path, as kubelet sends it). When set, they go only to
    /// that host: a mirror elsewhere is asked anonymously.
    pub server_address: String,
}

/// What the daemon needs from an image's config.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageConfigSummary {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
}

/// One image as the CRI reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// The config digest, `sha256:<hex>`: the CRI image id and `image_ref`.
    pub id: String,
    /// e.g. `docker.io/library/busybox:1.36`.
    pub repo_tags: Vec<String>,
    /// e.g. `docker.io/library/busybox@sha256:<manifest digest>`.
    pub repo_digests: Vec<String>,
    /// Sum of the compressed layer sizes plus config, as containerd reports.
    pub size: u64,
    pub config: ImageConfigSummary,
    /// The raw image config JSON (for verbose ImageStatus).
    pub config_json: String,
    pub pinned: bool,
}

/// Progress of one layer during a pull.
#[derive(Debug, Clone)]
pub struct PullProgress {
    /// The layer's blob digest.
    pub layer: String,
    /// Bytes received so far (== `total` when the layer is done or was present).
    pub downloaded: u64,
    /// The layer's compressed size from the manifest.
    pub total: u64,
}

/// Called from the pulling task; must not block.
pub type ProgressFn = Arc<dyn Fn(&PullProgress) + Send + Sync>;

pub struct ImageStore {
    inner: Arc<store::Inner>,
}

/// How long `fs_usage` may answer from its last walk.
pub const FS_USAGE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

static RUSTLS_PROVIDER: std::sync::Once = std::sync::Once::new();

impl ImageStore {
    /// Opens (creating) the store under `root`, cleaning temp files left by a crash.
    pub async fn open(root: &Path, registries: RegistryConfig) -> Result<Self, ImageError> {
        Self::open_with_tuning(root, registries, PullTuning::default()).await
    }

    /// `open` with explicit timeouts, retry bounds and download parallelism.
    pub async fn open_with_tuning(
        root: &Path,
        registries: RegistryConfig,
        tuning: PullTuning,
    ) -> Result<Self, ImageError> {
        RUSTLS_PROVIDER.call_once(|| {
            // Fails only if the process already chose a provider: fine too.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let root = root.to_path_buf();
        let inner =
            tokio::task::spawn_blocking(move || store::Inner::open(&root, registries, tuning))
                .await
                .map_err(|e| ImageError::Other(format!("opening image store: {e}")))??;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Pulls `reference` (kubelet's form: `busybox`, `name:tag`, `name@sha256:..`),
    /// returns the record (id = config digest). Concurrent pulls of one image share the work.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<PullAuth>,
    ) -> Result<ImageRecord, ImageError> {
        self.pull_inner(reference, auth, None).await
    }

    /// `pull`, calling `progress` as layer bytes arrive. A pull that joins
    /// one already running for the same image reports nothing until done.
    pub async fn pull_with_progress(
        &self,
        reference: &str,
        auth: Option<PullAuth>,
        progress: ProgressFn,
    ) -> Result<ImageRecord, ImageError> {
        self.pull_inner(reference, auth, Some(progress)).await
    }

    async fn pull_inner(
        &self,
        reference: &str,
        auth: Option<PullAuth>,
        progress: Option<ProgressFn>,
    ) -> Result<ImageRecord, ImageError> {
        let name = reference::ImageName::parse(reference)?;
        let credentials = registry::credentials(auth.as_ref())?;
        let key = pull::flight_key(&name, &credentials);
        let inner = self.inner.clone();
        let flight = self.inner.image_flights.join(key, move || {
            pull::pull(inner, name, credentials, progress).boxed()
        });
        flight.await
    }

    /// Every image.
    pub fn list(&self) -> Vec<ImageRecord> {
        let meta = self.inner.meta();
        meta.images.values().map(|i| meta.record(i)).collect()
    }

    /// Finds an image by id (full or unique prefix, with or without `sha256:`), tag or digest reference.
    pub fn resolve(&self, reference: &str) -> Option<ImageRecord> {
        let meta = self.inner.meta();
        meta.find(reference).map(|i| meta.record(i))
    }

    /// Removes the image (all its tags when given an id, one tag when given a tag); then GC.
    /// Idempotent: an unknown image is Ok.
    pub async fn remove(&self, reference: &str) -> Result<(), ImageError> {
        let tag = reference::ImageName::parse(reference)
            .ok()
            .and_then(|n| n.digest.is_none().then(|| n.tagged()).flatten());
        let removed = self.inner.update(|m| {
            let Some(id) = m.find(reference).map(|i| i.id.clone()) else {
                return false;
            };
            if let Some(tag) = tag.filter(|t| m.names.contains_key(t)) {
                m.names.remove(&tag);
                let other_tags = m
                    .names
                    .iter()
                    .any(|(n, t)| t.image == id && !n.contains('@'));
                if other_tags {
                    return true;
                }
            }
            m.names.retain(|_, t| t.image != id);
            m.images.remove(&id);
            true
        })?;
        if removed {
            self.gc().await?;
        }
        Ok(())
    }

    /// Removes every blob and snapshot no image, container or running pull
    /// needs. Returns (blobs, snapshots) removed.
    pub async fn gc(&self) -> Result<(usize, usize), ImageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.gc())
            .await
            .map_err(|e| ImageError::Other(format!("gc task failed: {e}")))?
    }

    /// Mounts the container's rootfs at `target`: an overlay of the image's snapshots
    /// plus an upper/work dir under `scratch` (created). Holds the image's snapshots
    /// against GC until `release_rootfs`.
    pub fn prepare_rootfs(
        &self,
        container_id: &str,
        image_id: &str,
        target: &Path,
        scratch: &Path,
    ) -> Result<(), ImageError> {
        self.prepare_rootfs_idmapped(container_id, image_id, target, scratch, None)
    }

    /// `prepare_rootfs` for a container in a user namespace of its pod's:
    /// with `idmap`, the image layers are mounted idmapped with that user
    /// namespace and the writable layer belongs to the container's root.
    pub fn prepare_rootfs_idmapped(
        &self,
        container_id: &str,
        image_id: &str,
        target: &Path,
        scratch: &Path,
        idmap: Option<&RootfsIdmap>,
    ) -> Result<(), ImageError> {
        let inner = &self.inner;
        if rootfs::is_mount_point(target) && inner.meta().holds.contains_key(container_id) {
            // Prepared before (e.g. a retried request): nothing to do.
            return Ok(());
        }
        let chains = inner.update(|m| {
            let image = m
                .find(image_id)
                .ok_or_else(|| ImageError::NotFound(image_id.to_string()))?;
            let chains: Vec<digest::Digest> = image.chain_ids().cloned().collect();
            if let Some(missing) = chains.iter().find(|c| !inner.snapshots.has(c)) {
                return Err(ImageError::Other(format!(
                    "image {image_id}: snapshot {missing} is missing; pull the image again"
                )));
            }
            m.holds.insert(container_id.to_string(), chains.clone());
            Ok(chains)
        })??;
        let mut lowers: Vec<PathBuf> = chains
            .iter()
            .rev()
            .map(|c| inner.snapshots.path(c))
            .collect();
        if lowers.is_empty() {
            lowers.push(inner.empty_dir.clone());
        }
        let (upper, work) = (scratch.join("upper"), scratch.join("work"));
        let mounted = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&upper)?;
            std::fs::create_dir_all(&work)?;
            std::fs::create_dir_all(target)?;
            if let Some(RootfsIdmap {
                root: (uid, gid), ..
            }) = idmap
            {
                for dir in [&upper, &work] {
                    std::os::unix::fs::chown(dir, Some(*uid), Some(*gid))?;
                }
            }
            rootfs::mount_overlay(&lowers, &upper, &work, target, idmap.map(|i| i.userns))
        })();
        if let Err(e) = mounted {
            if let Err(e) = rootfs::remove_scratch(scratch) {
                tracing::warn!(container = container_id, error = %e, "keeping the scratch dir");
            }
            let _ = inner.update(|m| m.holds.remove(container_id));
            return Err(ImageError::Other(format!(
                "mounting rootfs of {container_id} at {}: {e}",
                target.display()
            )));
        }
        Ok(())
    }

    /// Unmounts `target` and drops the container's hold; removes `scratch`. Idempotent.
    pub fn release_rootfs(
        &self,
        container_id: &str,
        target: &Path,
        scratch: &Path,
    ) -> Result<(), ImageError> {
        rootfs::unmount(target)
            .map_err(|e| ImageError::Other(format!("unmounting {}: {e}", target.display())))?;
        rootfs::remove_scratch(scratch)
            .map_err(|e| ImageError::Other(format!("removing {}: {e}", scratch.display())))?;
        let held = self.inner.update(|m| m.holds.remove(container_id))?;
        // The image may have been removed while the container ran.
        if let Some(chains) = held {
            let (_, live) = self.inner.meta().live();
            if chains.iter().any(|c| !live.contains(c)) {
                // Deleting snapshot trees takes a while: not on the caller's thread.
                let (victims, _) = self.inner.collect_garbage();
                if !victims.is_empty() {
                    std::thread::spawn(move || store::remove_victims(victims));
                }
            }
        }
        Ok(())
    }

    /// Bytes and inodes used by the image filesystem (blobs + snapshots).
    /// Walking the store costs time, and kubelet asks every few seconds:
    /// the answer is reused for up to [`FS_USAGE_MAX_AGE`].
    pub fn fs_usage(&self) -> (u64, u64) {
        let mut cached = self
            .inner
            .usage_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, usage)) = *cached {
            if at.elapsed() < FS_USAGE_MAX_AGE {
                return usage;
            }
        }
        let usage = store::disk_usage(&self.inner.root);
        *cached = Some((std::time::Instant::now(), usage));
        usage
    }

    /// Mount point of the image filesystem (for ImageFsInfo).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Imports an OCI-layout tar or a `docker save` tar; returns the images it holds.
    pub async fn import(&self, archive: &Path) -> Result<Vec<ImageRecord>, ImageError> {
        import::import(self.inner.clone(), archive).await
    }
}
