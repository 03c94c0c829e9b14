//! Pulling an image: resolve the name on the first endpoint that knows it,
//! pick this platform from an index, fetch the config, then download and
//! unpack the layers concurrently (each layer is unpacked while it streams),
//! and record the image only when everything is committed.

use crate::digest::{chain_ids, Digest};
use crate::flight::{CancelOnDrop, Tracker};
use crate::ingest::{ingest, ChannelReader, IngestJob};
use crate::manifest::{self, Parsed};
use crate::metadata::{ImageMeta, LayerMeta};
use crate::reference::ImageName;
use crate::registry::{self, PullCredentials, Remote, TagOrDigest};
use crate::store::Inner;
use crate::{ImageError, ImageRecord, ProgressFn, PullProgress};
use futures::{FutureExt, StreamExt, TryStreamExt};
use std::sync::Arc;

pub async fn pull(
    inner: Arc<Inner>,
    name: ImageName,
    credentials: PullCredentials,
    progress: Option<ProgressFn>,
) -> Result<ImageRecord, ImageError> {
    let what = match (&name.digest, &name.tag) {
        (Some(d), _) => TagOrDigest::Digest(d.clone()),
        (None, Some(t)) => TagOrDigest::Tag(t.clone()),
        (None, None) => TagOrDigest::Tag("latest".into()),
    };

    let mut failures = Vec::new();
    let mut resolved = None;
    for endpoint in registry::endpoints(&inner.registries, &name.domain) {
        let shown = endpoint.to_string();
        let presented = credentials.for_host(&endpoint.host);
        let resolving = async {
            let remote = Remote::connect(endpoint, &name, &presented, inner.tuning.clone()).await?;
            let (bytes, digest) = remote.manifest(&what).await?;
            Ok::<_, ImageError>((remote, bytes, digest))
        };
        match resolving.await {
            Ok(found) => {
                resolved = Some(found);
                break;
            }
            Err(e) => {
                tracing::info!(image = %name, endpoint = %shown, error = %e, "endpoint could not resolve image");
                failures.push(e);
            }
        }
    }
    let Some((remote, root_bytes, root_digest)) = resolved else {
        return Err(most_telling(failures, &name));
    };

    let (manifest_bytes, manifest_digest) =
        match manifest::parse(&root_bytes).map_err(|e| bad(&name, e))? {
            Parsed::Index(entries) => {
                let chosen = manifest::select_platform(&entries)
                    .map_err(|e| bad(&name, e))?
                    .digest
                    .clone();
                remote.manifest(&TagOrDigest::Digest(chosen)).await?
            }
            Parsed::Manifest(_) => (root_bytes.clone(), root_digest.clone()),
        };
    let Parsed::Manifest(m) = manifest::parse(&manifest_bytes).map_err(|e| bad(&name, e))? else {
        return Err(bad(&name, "the index chose another index".into()));
    };

    let config_bytes = match inner.content.read(&m.config.digest) {
        Ok(b) if Digest::of(&b) == m.config.digest => b,
        _ => {
            let b = remote
                .small_blob(&m.config.digest, m.config.size.max(0) as u64)
                .await?;
            inner
                .content
                .write_verified(&m.config.digest, &b)
                .map_err(ImageError::Other)?;
            b
        }
    };
    let config = manifest::parse_config(&config_bytes).map_err(|e| bad(&name, e))?;
    if config.diff_ids.len() != m.layers.len() {
        return Err(bad(
            &name,
            format!(
                "the config lists {} diff IDs for {} layers",
                config.diff_ids.len(),
                m.layers.len()
            ),
        ));
    }
    let chains = chain_ids(&config.diff_ids);
    let layers: Vec<LayerMeta> = m
        .layers
        .iter()
        .zip(config.diff_ids.iter().zip(chains.iter()))
        .map(|(l, (diff, chain))| LayerMeta {
            digest: l.digest.clone(),
            size: l.size.max(0) as u64,
            media_type: l.media_type.clone(),
            diff_id: diff.clone(),
            chain_id: chain.clone(),
        })
        .collect();

    let mut blobs: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
    blobs.extend([
        m.config.digest.clone(),
        manifest_digest.clone(),
        root_digest.clone(),
    ]);
    let _pins = inner.pin(blobs, chains.clone());

    let remote = Arc::new(remote);
    let jobs = Tracker::default();
    let unpacked = futures::stream::iter(layers.clone())
        .map(|layer| {
            ensure_layer(
                inner.clone(),
                Some(remote.clone()),
                layer,
                progress.clone(),
                jobs.clone(),
            )
        })
        .buffer_unordered(inner.tuning.parallel_layers.max(1))
        .try_collect::<Vec<()>>()
        .await;
    if unpacked.is_err() {
        // The other layers were cancelled: let them remove their temp files.
        jobs.wait().await;
    }
    unpacked?;

    inner
        .content
        .write_verified(&manifest_digest, &manifest_bytes)
        .map_err(ImageError::Other)?;
    inner
        .content
        .write_verified(&root_digest, &root_bytes)
        .map_err(ImageError::Other)?;

    let image = ImageMeta {
        id: m.config.digest.clone(),
        manifest: manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        config_size: config_bytes.len() as u64,
        layers,
        config: config.summary,
        config_json: String::from_utf8_lossy(&config_bytes).into_owned(),
    };
    let mut names = vec![name.with_digest(&root_digest)];
    names.extend(name.tagged());
    inner.commit_image(image, &names, &root_digest)
}

fn bad(name: &ImageName, reason: String) -> ImageError {
    ImageError::Other(format!("image {name}: {reason}"))
}

/// When every endpoint failed: credentials trouble first, then "not
/// found" (only if all agree), else the last failure.
fn most_telling(mut failures: Vec<ImageError>, name: &ImageName) -> ImageError {
    if let Some(i) = failures
        .iter()
        .position(|e| matches!(e, ImageError::Unauthorized { .. }))
    {
        return failures.swap_remove(i);
    }
    if !failures.is_empty()
        && failures
            .iter()
            .all(|e| matches!(e, ImageError::NotFound(_)))
    {
        return ImageError::NotFound(name.to_string());
    }
    failures
        .pop()
        .unwrap_or_else(|| ImageError::Other(format!("image {name}: no registry endpoint")))
}

/// Makes sure the snapshot of `layer` exists: from the blob if stored,
/// else by downloading it (unpacking while it streams).
pub async fn ensure_layer(
    inner: Arc<Inner>,
    remote: Option<Arc<Remote>>,
    layer: LayerMeta,
    progress: Option<ProgressFn>,
    jobs: Tracker,
) -> Result<(), ImageError> {
    let report = |done: u64| {
        if let Some(p) = &progress {
            p(&PullProgress {
                layer: layer.digest.to_string(),
                downloaded: done,
                total: layer.size,
            });
        }
    };
    if inner.snapshots.has(&layer.chain_id) {
        report(layer.size);
        return Ok(());
    }
    let flight = {
        let inner = inner.clone();
        let layer = layer.clone();
        let progress = progress.clone();
        inner
            .clone()
            .layer_flights
            .join(layer.chain_id.clone(), move || {
                async move {
                    if inner.snapshots.has(&layer.chain_id) {
                        return Ok(());
                    }
                    if !inner.content.has(&layer.digest) {
                        let Some(remote) = remote else {
                            return Err(ImageError::Other(format!(
                                "layer {} is missing from the store",
                                layer.digest
                            )));
                        };
                        let download = {
                            let inner = inner.clone();
                            let layer = layer.clone();
                            let jobs = jobs.clone();
                            inner
                                .clone()
                                .blob_flights
                                .join(layer.digest.clone(), move || {
                                    download(inner, remote, layer, progress, jobs).boxed()
                                })
                        };
                        download.await?;
                        if inner.snapshots.has(&layer.chain_id) {
                            return Ok(());
                        }
                    }
                    unpack_stored(inner, layer, jobs).await
                }
                .boxed()
            })
    };
    flight.await?;
    report(layer.size);
    Ok(())
}

/// Downloads a layer blob, unpacking it into its snapshot on the way.
async fn download(
    inner: Arc<Inner>,
    remote: Arc<Remote>,
    layer: LayerMeta,
    progress: Option<ProgressFn>,
    jobs: Tracker,
) -> Result<(), ImageError> {
    let cancel = CancelOnDrop::new();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let job = IngestJob {
        digest: layer.digest.clone(),
        size: Some(layer.size).filter(|&s| s > 0),
        store_blob: true,
        snapshot: Some((layer.chain_id.clone(), layer.diff_id.clone())),
        cancel: cancel.flag(),
    };
    let (content, snapshots) = (inner.content.clone(), inner.snapshots.clone());
    let running = jobs.start();
    let blocking = tokio::task::spawn_blocking(move || {
        let _running = running;
        ingest(ChannelReader::new(rx), job, &content, &snapshots)
    });
    let size = Some(layer.size).filter(|&s| s > 0);
    let fetch = remote.blob(&layer.digest, size, tx, |done| {
        if let Some(p) = &progress {
            p(&PullProgress {
                layer: layer.digest.to_string(),
                downloaded: done,
                total: layer.size,
            });
        }
    });
    let (fetched, ingested) = tokio::join!(fetch, blocking);
    let ingested = ingested.map_err(|e| {
        ImageError::Other(format!("layer {}: unpack task failed: {e}", layer.digest))
    })?;
    // A network failure also fails the ingest; its own error says more.
    fetched?;
    ingested
}

/// Unpacks a layer whose blob is already in the content store.
pub async fn unpack_stored(
    inner: Arc<Inner>,
    layer: LayerMeta,
    jobs: Tracker,
) -> Result<(), ImageError> {
    let cancel = CancelOnDrop::new();
    let job = IngestJob {
        digest: layer.digest.clone(),
        size: None,
        store_blob: false,
        snapshot: Some((layer.chain_id.clone(), layer.diff_id.clone())),
        cancel: cancel.flag(),
    };
    let path = inner.content.path(&layer.digest);
    let (content, snapshots) = (inner.content.clone(), inner.snapshots.clone());
    let running = jobs.start();
    tokio::task::spawn_blocking(move || {
        let _running = running;
        let file = std::fs::File::open(&path).map_err(|e| {
            ImageError::Other(format!("layer {}: opening blob: {e}", path.display()))
        })?;
        ingest(file, job, &content, &snapshots)
    })
    .await
    .map_err(|e| ImageError::Other(format!("layer {}: unpack task failed: {e}", layer.digest)))?
}

/// Names a caller pulling `name` shares work under (different credentials
/// never share a pull).
pub fn flight_key(name: &ImageName, credentials: &PullCredentials) -> String {
    format!("{name}\0{}", credentials.fingerprint())
}
