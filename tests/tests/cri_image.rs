//! The CRI ImageService of the daemon over a real local registry (through a
//! mirror entry), and the `rcrun-cri image` CLI against the running daemon.
use std::process::Output;

use rcrun_proto::cri;
use rcrun_tests::daemon::{container_config, pod_config, Daemon, DaemonOptions};
use rcrun_tests::images::{image_spec, lists_image, MirroredRegistry};

/// `rcrun-cri image <args>` against the daemon.
fn image_cli(d: &Daemon, args: &[&str]) -> Output {
    d.command().arg("image").args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_status_use_and_remove() {
    let MirroredRegistry {
        daemon: mut d,
        registry,
        image,
        reference,
    } = MirroredRegistry::start().await;
    let image_ref = d.pull(&reference, None).await.unwrap();
    assert_eq!(image_ref, image.config_digest);

    let list = d.list_images().await.unwrap();
    assert!(
        lists_image(&list, &image.config_digest, &reference),
        "{list:?}"
    );
    let status = d
        .images
        .image_status(cri::ImageStatusRequest {
            image: image_spec(&reference),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let found = status.image.unwrap();
    assert_eq!(found.id, image.config_digest);
    assert!(found.size > 0);
    assert!(status.info.contains_key("info"));
    // An unknown image: no image, no error (as the CRI wants).
    let none = d
        .images
        .image_status(cri::ImageStatusRequest {
            image: image_spec("registry.example.test/none:1"),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.image.is_none());
    // Pulling what the registry lacks: NotFound.
    let missing = format!("{}/none:1", registry.addr());
    let err = d.pull(&missing, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = d
        .images
        .pull_image(cri::PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // A container runs from the pulled image, referenced by id.
    let logs = tempfile::tempdir().unwrap();
    let pod = pod_config("pulled", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let c = d
        .run_container(
            &pod_id,
            &pod,
            &container_config("c", &image.config_digest, &["sleep", "100"]),
        )
        .await
        .unwrap();
    // As containerd reports it: id = config digest, image = a tag, image_ref = a repo digest.
    let st = d.status(&c).await.unwrap();
    assert_eq!(st.image_id, image.config_digest);
    assert_eq!(st.image.as_ref().unwrap().image, reference);
    assert!(st.image_ref.contains("@sha256:"), "{st:?}");
    let listed = d
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed[0].image_id, image.config_digest);
    let r = d.exec_sync(&c, &["echo", "ok"], 5).await.unwrap();
    assert_eq!(r.stdout, b"ok\n");

    let fs = d
        .images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);
    assert_eq!(fs.container_filesystems.len(), 1);
    d.remove_all_pods().await.unwrap();

    d.images
        .remove_image(cri::RemoveImageRequest {
            image: image_spec(&reference),
        })
        .await
        .unwrap();
    let list = d.list_images().await.unwrap();
    assert!(
        list.iter().all(|i| !i.repo_tags.contains(&reference)),
        "{list:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_cli_imports_lists_and_removes() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let fixture = rcrun_tests::fixtures::image("busybox");
    let out = d.import(&fixture.docker_archive()).unwrap();
    assert!(out.contains(&fixture.config_digest[7..20]), "{out}");
    let ls = image_cli(&d, &["ls"]);
    assert!(ls.status.success());
    assert!(String::from_utf8_lossy(&ls.stdout).contains("rcrun-test/busybox:latest"));
    let list = d.list_images().await.unwrap();
    assert_eq!(list.len(), 1);
    let rm = image_cli(&d, &["rm", &fixture.config_digest]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let list = d.list_images().await.unwrap();
    assert!(list.is_empty(), "{list:?}");
    // Errors are clear and the exit status says so.
    let rm = image_cli(&d, &["rm", "no-such-image"]);
    assert!(!rm.status.success());
    assert!(String::from_utf8_lossy(&rm.stderr).contains("not found"));
    let bad = image_cli(&d, &["import", "/etc/hostname"]);
    assert!(!bad.status.success());
    assert!(!String::from_utf8_lossy(&bad.stderr).trim().is_empty());
}
