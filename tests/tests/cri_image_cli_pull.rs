//! `rcrun-cri image pull` against the running daemon: it pulls through the
//! daemon's admin socket from a real local registry, prints its layers'
//! progress, and the CRI sees the image afterwards.
use rcrun_tests::daemon::{Daemon, DaemonOptions};
use rcrun_tests::images::{cli_pull, lists_image, MirroredRegistry};
use rcrun_tests::registry::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_shows_layers_and_the_cri_lists_the_image() {
    let MirroredRegistry {
        daemon: mut d,
        registry: _registry,
        image,
        reference,
    } = MirroredRegistry::start().await;
    let out = cli_pull(&d, &reference, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a terminal: one plain line per finished layer, then the image id.
    let layer_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("sha256:") && l.contains(": done ("))
        .collect();
    assert!(!layer_lines.is_empty(), "{stdout}");
    assert_eq!(stdout.lines().last(), Some(image.config_digest.as_str()));

    let list = d.list_images().await.unwrap();
    assert!(
        lists_image(&list, &image.config_digest, &reference),
        "{list:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_of_an_unknown_image_fails_naming_it() {
    let registry = Registry::start();
    let d = Daemon::start(DaemonOptions {
        insecure_registries: vec![registry.addr().to_string()],
        ..Default::default()
    })
    .await;
    let missing = format!("{}/no-such-image:1", registry.addr());
    let out = cli_pull(&d, &missing, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-image") && stderr.contains("not found"),
        "{stderr}"
    );
}
