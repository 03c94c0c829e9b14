//! What the image tests share: a registry behind a mirror entry of the
//! daemon, CRI image requests, and the daemon's ImageService calls.
use rcrun_proto::cri;

use crate::daemon::{Daemon, DaemonOptions};
use crate::fixtures::Image;
use crate::registry::Registry;

/// The registry host the daemon's mirror entry stands in for: images are
/// pulled by this name and fetched from the mirror.
pub const MIRRORED_HOST: &str = "registry.example.test";

/// `<host>/<repository>:<first tag>` of `image`.
pub fn reference(host: &str, image: &Image) -> String {
    format!("{host}/{}:{}", image.repository, image.tags[0])
}

/// Daemon options under which [`MIRRORED_HOST`] is served by `endpoint`.
pub fn mirror_options(endpoint: String) -> DaemonOptions {
    DaemonOptions {
        registry_mirrors: vec![(MIRRORED_HOST.into(), vec![endpoint])],
        ..Default::default()
    }
}

pub fn image_spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

pub fn pull_request(reference: &str, auth: Option<cri::AuthConfig>) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: image_spec(reference),
        auth,
        ..Default::default()
    }
}

/// Whether `list` holds the image `id` tagged `tag`.
pub fn lists_image(list: &[cri::Image], id: &str, tag: &str) -> bool {
    list.iter()
        .any(|i| i.id == id && i.repo_tags.iter().any(|t| t == tag))
}

/// A plain-http registry holding busybox, and a daemon reaching it through
/// a mirror entry for [`MIRRORED_HOST`].
pub struct MirroredRegistry {
    pub daemon: Daemon,
    pub registry: Registry,
    pub image: Image,
    /// `registry.example.test/<repository>:<tag>`.
    pub reference: String,
}

impl MirroredRegistry {
    pub async fn start() -> MirroredRegistry {
        let registry = Registry::start();
        let image = registry.push_image("busybox");
        let daemon = Daemon::start(DaemonOptions {
            insecure_registries: vec![registry.addr().to_string()],
            ..mirror_options(registry.url())
        })
        .await;
        let reference = reference(MIRRORED_HOST, &image);
        MirroredRegistry {
            daemon,
            registry,
            image,
            reference,
        }
    }
}

/// The daemon's ImageService, for the calls the tests repeat.
impl Daemon {
    /// PullImage; the pulled image's ref.
    pub async fn pull(
        &mut self,
        reference: &str,
        auth: Option<cri::AuthConfig>,
    ) -> Result<String, tonic::Status> {
        self.images
            .pull_image(pull_request(reference, auth))
            .await
            .map(|r| r.into_inner().image_ref)
    }

    pub async fn list_images(&mut self) -> Result<Vec<cri::Image>, tonic::Status> {
        self.images
            .list_images(cri::ListImagesRequest::default())
            .await
            .map(|r| r.into_inner().images)
    }

    /// RemoveImage of `reference`, which must succeed.
    pub async fn remove_image(&mut self, reference: &str) {
        self.images
            .remove_image(cri::RemoveImageRequest {
                image: image_spec(reference),
            })
            .await
            .expect("RemoveImage");
    }

    /// Every tag of every image listed.
    pub async fn image_names(&mut self) -> Vec<String> {
        self.list_images()
            .await
            .expect("ListImages")
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect()
    }
}

/// `rcrun-cri image pull REFERENCE ARGS...` against the daemon's socket.
pub fn cli_pull(d: &Daemon, reference: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::bins::bin("rcrun-cri"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["image", "pull", reference])
        .args(args)
        .output()
        .expect("running rcrun-cri image pull")
}
