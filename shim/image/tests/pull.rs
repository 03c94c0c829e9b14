//! Pulls from a real registry (Debian's docker-registry on 127.0.0.1) of
//! the fixture images; rootfs mounts need root.

mod common;

use common::{count_entries, files_below, open, registries, with_rootfs, Proxy};
use rcrun_image::{ImageError, ImageStore, PullAuth};
use rcrun_tests::fixtures::{self, Image};
use rcrun_tests::registry::Registry;
use std::path::Path;
use std::time::Duration;

fn blobs(root: &Path) -> usize {
    count_entries(&root.join("blobs/sha256"))
}

fn snapshots(root: &Path) -> usize {
    count_entries(&root.join("snapshots"))
}

/// A registry with the fixture image `name` pushed, and an empty store in a
/// temp dir that pulls from it.
async fn registry_and_store(name: &str) -> (Registry, Image, tempfile::TempDir, ImageStore) {
    let reg = Registry::start();
    let image = reg.push_image(name);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), reg.addr()).await;
    (reg, image, dir, store)
}

/// `<registry>/<repository>:latest` of a pushed image.
fn latest(reg: &Registry, image: &Image) -> String {
    format!("{}/{}:latest", reg.addr(), image.repository)
}

/// The layer descriptors of the image's `latest` manifest, as the registry
/// serves it.
fn manifest_layers(reg: &Registry, image: &Image) -> Vec<serde_json::Value> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&reg.manifest(&image.repository, "latest").unwrap().body).unwrap();
    manifest["layers"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_tag_and_by_digest_reports_names_like_containerd() {
    let (reg, image, dir, store) = registry_and_store("busybox").await;
    let repo = format!("{}/{}", reg.addr(), image.repository);

    let by_tag = store.pull(&format!("{repo}:latest"), None).await.unwrap();
    assert_eq!(by_tag.id, image.config_digest);
    assert_eq!(by_tag.repo_tags, vec![format!("{repo}:latest")]);
    assert_eq!(
        by_tag.repo_digests,
        vec![format!("{repo}@{}", image.digest)]
    );
    assert!(by_tag.size > 0);
    assert!(by_tag.config_json.contains("\"rootfs\""));

    let by_digest = store
        .pull(&format!("{repo}@{}", image.digest), None)
        .await
        .unwrap();
    assert_eq!(by_digest.id, image.config_digest);
    // tag + digest: the digest decides
    let both = store
        .pull(&format!("{repo}:ignored@{}", image.digest), None)
        .await
        .unwrap();
    assert_eq!(both.id, image.config_digest);
    assert_eq!(store.list().len(), 1);

    for reference in [
        by_tag.id.clone(),
        by_tag.id.trim_start_matches("sha256:")[..12].to_string(),
        format!("{repo}:latest"),
        format!("{repo}@{}", image.digest),
    ] {
        assert_eq!(
            store.resolve(&reference).map(|r| r.id),
            Some(by_tag.id.clone()),
            "{reference}"
        );
    }
    assert!(store.resolve(&format!("{repo}:other")).is_none());

    // A restart keeps everything.
    drop(store);
    let store = open(dir.path(), reg.addr()).await;
    let listed = store.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].repo_tags, by_tag.repo_tags);
    let (bytes, inodes) = store.fs_usage();
    assert!(bytes > 0 && inodes > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_keep_original_names_and_indexes_pick_this_platform() {
    let reg = Registry::start();
    let busybox = reg.push_image("critest-busybox");
    let pause = reg.push_image("critest-pause-3.9");
    let multi = reg.push_image("multiarch");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), reg.addr()).await;

    let name = format!("registry.k8s.io/{}:{}", busybox.repository, busybox.tags[0]);
    let record = store.pull(&name, None).await.unwrap();
    assert_eq!(record.id, busybox.config_digest);
    assert_eq!(record.repo_tags, vec![name.clone()]);
    assert_eq!(
        record.repo_digests,
        vec![format!(
            "registry.k8s.io/{}@{}",
            busybox.repository, busybox.digest
        )]
    );

    // One image under two registry names: one id, two tags.
    let a = store.pull("registry.k8s.io/pause:3.9", None).await.unwrap();
    let b = store.pull("k8s.gcr.io/pause:3.9", None).await.unwrap();
    assert_eq!(a.id, pause.config_digest);
    assert_eq!(b.id, a.id);
    assert_eq!(
        b.repo_tags,
        vec![
            "k8s.gcr.io/pause:3.9".to_string(),
            "registry.k8s.io/pause:3.9".to_string()
        ]
    );

    // docker.io short names go through the docker.io mirror.
    let short = store
        .pull(&format!("{}:latest", multi.repository), None)
        .await
        .unwrap();
    assert_eq!(short.id, multi.config_digest);
    assert_eq!(
        short.repo_tags,
        vec![format!("docker.io/{}:latest", multi.repository)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_checked() {
    let reg = Registry::start_with_auth("tester", "s3cret");
    let image = reg.push_image("busybox");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), reg.addr()).await;
    let name = latest(&reg, &image);

    let anonymous = store.pull(&name, None).await;
    assert!(
        matches!(anonymous, Err(ImageError::Unauthorized { .. })),
        "{anonymous:?}"
    );
    let wrong = PullAuth {
        username: "tester".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let wrong = store.pull(&name, Some(wrong)).await;
    assert!(
        matches!(wrong, Err(ImageError::Unauthorized { .. })),
        "{wrong:?}"
    );
    assert!(store.list().is_empty());

    let right = PullAuth {
        username: "tester".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(
        store.pull(&name, Some(right)).await.unwrap().id,
        image.config_digest
    );
    let other = format!("{}/{}@{}", reg.addr(), image.repository, image.digest);
    let encoded = PullAuth {
        auth: rcrun_tests::registry::base64(b"tester:s3cret"),
        ..Default::default()
    };
    assert_eq!(
        store.pull(&other, Some(encoded)).await.unwrap().id,
        image.config_digest
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_images_are_not_found() {
    let (reg, image, _dir, store) = registry_and_store("busybox").await;
    for name in [
        format!("{}/no/such-image:latest", reg.addr()),
        format!("{}/{}:no-such-tag", reg.addr(), image.repository),
        "registry.k8s.io/no-such-image:1".to_string(),
    ] {
        let result = store.pull(&name, None).await;
        match result {
            Err(ImageError::NotFound(n)) => assert!(n.contains("no"), "{n}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    let bad = store.pull("UPPER/case", None).await;
    assert!(
        matches!(bad, Err(ImageError::InvalidReference { .. })),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_blob_fails_the_pull_and_keeps_nothing() {
    let reg = Registry::start();
    let image = reg.push_image("busybox");
    // The biggest blob is the layer: flip bytes in the middle, keep the size.
    let data = files_below(&reg.storage_dir())
        .into_iter()
        .map(|p| reg.storage_dir().join(p))
        .filter(|p| p.ends_with("data"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&data, bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), reg.addr()).await;
    let err = store.pull(&latest(&reg, &image), None).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("digest mismatch") || msg.contains("layer"),
        "{msg}"
    );
    assert!(store.list().is_empty());
    assert_eq!(snapshots(dir.path()), 0, "snapshot kept");
    assert_eq!(count_entries(&dir.path().join("tmp")), 0, "temp files left");
    // Only the (intact) config may be stored; no layer blob.
    let stored: Vec<_> = files_below(&dir.path().join("blobs/sha256"));
    assert!(
        stored
            .iter()
            .all(|p| !data.to_string_lossy().contains(&*p.to_string_lossy())),
        "{stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malicious_layers_are_refused_and_nothing_escapes() {
    let reg = Registry::start();
    let target = Path::new("/tmp/rcrun-evil-hardlink-target");
    std::fs::write(target, "precious\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), reg.addr()).await;
    for name in [
        "evil-traversal",
        "evil-absolute",
        "evil-symlink",
        "evil-hardlink",
    ] {
        let image = reg.push_image(name);
        let err = store.pull(&latest(&reg, &image), None).await.unwrap_err();
        assert!(err.to_string().contains("refused"), "{name}: {err}");
    }
    for escaped in [
        "rcrun-evil-traversal",
        "rcrun-evil-absolute",
        "rcrun-evil-symlink",
        "rcrun-evil-symlink-relative",
        "rcrun-evil-hardlink-via-symlink",
    ] {
        assert!(
            !Path::new("/tmp").join(escaped).exists(),
            "{escaped} escaped"
        );
    }
    assert_eq!(std::fs::read_to_string(target).unwrap(), "precious\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(target).unwrap().nlink(), 1);
    assert!(store.list().is_empty());
    assert_eq!(count_entries(&dir.path().join("tmp")), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_apply_in_the_container_rootfs() {
    let (reg, image, _dir, store) = registry_and_store("whiteouts").await;
    let record = store.pull(&latest(&reg, &image), None).await.unwrap();

    with_rootfs(&store, "c1", &record.id, |rootfs, scratch| {
        assert_eq!(
            std::fs::read_to_string(rootfs.join("data/keep")).unwrap(),
            "keep\n"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("data/link")).unwrap(),
            "keep\n"
        );
        assert!(!rootfs.join("data/remove-me").exists());
        assert_eq!(
            files_below(&rootfs.join("opaque")),
            vec![Path::new("new").to_path_buf()]
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("replaced")).unwrap(),
            "v2\n"
        );
        assert!(rootfs.join("bin").exists());
        // Writes land in the container's upper dir only.
        std::fs::write(rootfs.join("written"), "x").unwrap();
        assert!(scratch.join("upper/written").exists());
    });
    let work = tempfile::tempdir().unwrap();
    let (rootfs, scratch) = (work.path().join("rootfs"), work.path().join("scratch"));
    // Idempotent.
    store.release_rootfs("c1", &rootfs, &scratch).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_zstd_and_plain_layers() {
    let (reg, image, dir, store) = registry_and_store("compressions").await;
    let record = store.pull(&latest(&reg, &image), None).await.unwrap();
    assert_eq!(record.id, image.config_digest);
    let kinds: Vec<String> = manifest_layers(&reg, &image)
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k.ends_with("+zstd")), "{kinds:?}");
    assert!(kinds.iter().any(|k| k.ends_with("+gzip")), "{kinds:?}");
    assert!(kinds.iter().any(|k| k.ends_with(".tar")), "{kinds:?}");
    assert_eq!(snapshots(dir.path()), kinds.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_share_one_download() {
    let reg = Registry::start();
    let one = reg.push_image("critest-test-image-1");
    let two = reg.push_image("critest-test-image-2");
    let proxy = Proxy::start(reg.addr(), Duration::from_millis(2));
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &proxy.addr).await;
    let n1 = format!("gcr.io/{}:latest", one.repository);
    let n2 = format!("gcr.io/{}:latest", two.repository);
    let (a, b, c) = tokio::join!(
        store.pull(&n1, None),
        store.pull(&n1, None),
        store.pull(&n2, None)
    );
    assert_eq!(a.unwrap().id, one.config_digest);
    assert_eq!(b.unwrap().id, one.config_digest);
    assert_eq!(c.unwrap().id, two.config_digest);
    let gets = proxy.blob_gets();
    assert!(!gets.is_empty());
    for (digest, n) in &gets {
        assert_eq!(*n, 1, "blob {digest} fetched {n} times: {gets:?}");
    }
    // Pulling again downloads nothing.
    store.pull(&n1, None).await.unwrap();
    assert_eq!(proxy.blob_gets(), gets);
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_and_gc_keep_what_is_shared_or_held() {
    let reg = Registry::start();
    let one = reg.push_image("critest-test-image-1");
    let two = reg.push_image("critest-test-image-2");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), reg.addr()).await;
    let n1 = format!("gcr.io/{}:latest", one.repository);
    let n2 = format!("gcr.io/{}:latest", two.repository);
    let r1 = store.pull(&n1, None).await.unwrap();
    store.pull(&n2, None).await.unwrap();
    let (blobs_both, snaps_both) = (blobs(dir.path()), snapshots(dir.path()));

    // A running container keeps image 1's snapshots after its removal.
    let work = tempfile::tempdir().unwrap();
    let (rootfs, scratch) = (work.path().join("rootfs"), work.path().join("scratch"));
    store
        .prepare_rootfs("c1", &r1.id, &rootfs, &scratch)
        .unwrap();
    store.remove(&n1).await.unwrap();
    assert!(store.resolve(&n1).is_none());
    assert!(blobs(dir.path()) < blobs_both);
    assert_eq!(snapshots(dir.path()), snaps_both);
    assert!(rootfs.join("test-image-1").exists() || rootfs.join("bin").exists());
    store.release_rootfs("c1", &rootfs, &scratch).unwrap();
    assert!(
        snapshots(dir.path()) < snaps_both,
        "shared layer must stay, image 1's own must go"
    );
    assert!(snapshots(dir.path()) > 0);

    // Unknown references are fine; removing by id removes every name.
    store.remove(&n1).await.unwrap();
    store
        .remove("sha256:0000000000000000000000000000000000000000000000000000000000000000")
        .await
        .unwrap();
    store.remove(&two.config_digest).await.unwrap();
    assert!(store.list().is_empty());
    assert_eq!(blobs(dir.path()), 0);
    assert_eq!(snapshots(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_one_of_several_tags_keeps_the_image() {
    let reg = Registry::start();
    let tags = reg.push_image("critest-test-image-tags");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), reg.addr()).await;
    for t in &tags.tags {
        store
            .pull(&format!("gcr.io/{}:{t}", tags.repository), None)
            .await
            .unwrap();
    }
    let record = store.resolve(&tags.config_digest).unwrap();
    assert_eq!(record.repo_tags.len(), 3);
    store
        .remove(&format!("gcr.io/{}:1", tags.repository))
        .await
        .unwrap();
    assert_eq!(
        store.resolve(&tags.config_digest).unwrap().repo_tags.len(),
        2
    );
    store
        .remove(&format!("gcr.io/{}:2", tags.repository))
        .await
        .unwrap();
    store
        .remove(&format!("gcr.io/{}:3", tags.repository))
        .await
        .unwrap();
    assert!(store.list().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn import_oci_layout_and_docker_archives() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path(), Default::default())
        .await
        .unwrap();
    let busybox = fixtures::image("busybox");
    let multi = fixtures::image("critest-busybox");

    let from_oci = store.import(&busybox.oci_archive()).await.unwrap();
    assert_eq!(from_oci.len(), 1);
    assert_eq!(from_oci[0].id, busybox.config_digest);
    let index = store.import(&multi.oci_archive()).await.unwrap();
    assert_eq!(index[0].id, multi.config_digest);

    let other = tempfile::tempdir().unwrap();
    let store2 = ImageStore::open(other.path(), Default::default())
        .await
        .unwrap();
    let from_docker = store2.import(&busybox.docker_archive()).await.unwrap();
    assert_eq!(from_docker.len(), 1);
    assert_eq!(from_docker[0].id, busybox.config_digest);
    assert!(!from_docker[0].repo_tags.is_empty(), "{:?}", from_docker[0]);

    let work = tempfile::tempdir().unwrap();
    with_rootfs(&store2, "c", &from_docker[0].id, |rootfs, _| {
        assert!(rootfs.join("bin/busybox").exists());
    });

    let bogus = work.path().join("bogus.tar");
    std::fs::write(&bogus, b"not a tar").unwrap();
    assert!(store2.import(&bogus).await.is_err());
    assert_eq!(count_entries(&other.path().join("tmp")), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_pull_is_cancelled_and_leaves_nothing() {
    let reg = Registry::start();
    let image = reg.push_image("critest-busybox");
    let proxy = Proxy::start(reg.addr(), Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &proxy.addr).await;
    let name = format!("registry.k8s.io/{}:{}", image.repository, image.tags[0]);
    let timed_out = tokio::time::timeout(Duration::from_millis(800), store.pull(&name, None)).await;
    assert!(
        timed_out.is_err(),
        "pull finished too fast to test cancellation"
    );
    // The blocking unpack notices and cleans up.
    for _ in 0..50 {
        if count_entries(&dir.path().join("tmp")) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count_entries(&dir.path().join("tmp")), 0);
    assert!(store.list().is_empty());
    proxy.set_delay(Duration::ZERO);
    assert_eq!(
        store.pull(&name, None).await.unwrap().id,
        image.config_digest
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_registry_times_out_without_a_total_limit() {
    let reg = Registry::start();
    let image = reg.push_image("busybox");
    // Slow but steady: each 16 KiB chunk 5 ms late; the stall timeout is shorter
    // than the whole pull, and the pull still completes.
    let proxy = Proxy::start(reg.addr(), Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let tuning = rcrun_image::PullTuning {
        stall_timeout: Duration::from_millis(400),
        ..Default::default()
    };
    let store = ImageStore::open_with_tuning(dir.path(), registries(&proxy.addr), tuning.clone())
        .await
        .unwrap();
    let name = format!("{}/{}:latest", proxy.addr, image.repository);
    let started = std::time::Instant::now();
    store.pull(&name, None).await.unwrap();
    assert!(
        started.elapsed() > tuning.stall_timeout,
        "pull too fast to show anything"
    );

    // A registry that stops sending fails after the bounded retries.
    proxy.set_delay(Duration::from_secs(3600));
    let dir2 = tempfile::tempdir().unwrap();
    let tuning = rcrun_image::PullTuning {
        stall_timeout: Duration::from_millis(300),
        attempts: 2,
        ..Default::default()
    };
    let store2 = ImageStore::open_with_tuning(dir2.path(), registries(&proxy.addr), tuning)
        .await
        .unwrap();
    let err = store2.pull(&name, None).await.unwrap_err();
    assert!(err.to_string().contains("no "), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_reaches_every_layers_size() {
    let (reg, image, _dir, store) = registry_and_store("compressions").await;
    let seen: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>>> =
        Default::default();
    let sink = seen.clone();
    let progress: rcrun_image::ProgressFn =
        std::sync::Arc::new(move |p: &rcrun_image::PullProgress| {
            let mut seen = sink.lock().unwrap();
            let entry = seen.entry(p.layer.clone()).or_default();
            assert!(p.downloaded >= entry.0, "progress went backwards");
            *entry = (p.downloaded, p.total);
        });
    store
        .pull_with_progress(&latest(&reg, &image), None, progress)
        .await
        .unwrap();
    let layers = manifest_layers(&reg, &image);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), layers.len());
    for l in &layers {
        let (done, total) = seen[l["digest"].as_str().unwrap()];
        assert_eq!(
            (done, total),
            (l["size"].as_u64().unwrap(), l["size"].as_u64().unwrap())
        );
    }
}
