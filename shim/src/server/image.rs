//! The CRI ImageService, mapped onto the image store.
use std::collections::HashMap;

use rcrun_proto::cri;
use tonic::Status;

use super::container::image_error_status;
use super::RpcResult;
use crate::daemon::{now_ns, Daemon};

/// The CRI view of an image record.
pub fn image_proto(record: &rcrun_image::ImageRecord) -> cri::Image {
    // USER is reported as a uid when numeric, else as a name (as containerd does).
    let user = record
        .config
        .user
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) if user.is_empty() => (None, String::new()),
        Err(_) => (None, user),
    };
    cri::Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: record.id.clone(),
            ..Default::default()
        }),
        pinned: record.pinned,
    }
}

fn image_ref_of(spec: Option<&cri::ImageSpec>) -> RpcResult<&str> {
    match spec.map(|s| s.image.as_str()) {
        Some(image) if !image.is_empty() => Ok(image),
        _ => Err(Status::invalid_argument("image.image must not be empty")),
    }
}

impl Daemon {
    pub fn list_images(&self, filter: Option<cri::ImageFilter>) -> Vec<cri::Image> {
        let wanted = filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        match wanted {
            Some(reference) => self
                .images
                .resolve(&reference)
                .iter()
                .map(image_proto)
                .collect(),
            None => self.images.list().iter().map(image_proto).collect(),
        }
    }

    pub fn image_status(
        &self,
        req: cri::ImageStatusRequest,
    ) -> RpcResult<cri::ImageStatusResponse> {
        let reference = image_ref_of(req.image.as_ref())?;
        // An unknown image is not an error here: the CRI answers with no image.
        let Some(record) = self.images.resolve(reference) else {
            return Ok(cri::ImageStatusResponse::default());
        };
        let mut info = HashMap::new();
        if req.verbose {
            let config: serde_json::Value =
                serde_json::from_str(&record.config_json).unwrap_or_default();
            let value = serde_json::json!({
                "id": record.id,
                "repoTags": record.repo_tags,
                "repoDigests": record.repo_digests,
                "size": record.size,
                "imageSpec": config,
            });
            info.insert("info".to_string(), value.to_string());
        }
        Ok(cri::ImageStatusResponse {
            image: Some(image_proto(&record)),
            info,
        })
    }

    pub async fn pull_image(
        &self,
        req: cri::PullImageRequest,
    ) -> RpcResult<cri::PullImageResponse> {
        let reference = image_ref_of(req.image.as_ref())?.to_string();
        let auth = req.auth.map(|a| rcrun_image::PullAuth {
            username: a.username,
            password: a.password,
            auth: a.auth,
            identity_token: a.identity_token,
            registry_token: a.registry_token,
            server_address: a.server_address,
        });
        let record = self
            .images
            .pull(&reference, auth)
            .await
            .map_err(image_error_status)?;
        tracing::info!(image = %reference, id = %record.id, "image pulled");
        Ok(cri::PullImageResponse {
            image_ref: record.id,
        })
    }

    pub async fn remove_image(&self, req: cri::RemoveImageRequest) -> RpcResult<()> {
        let reference = image_ref_of(req.image.as_ref())?.to_string();
        self.images
            .remove(&reference)
            .await
            .map_err(image_error_status)
    }

    pub async fn image_fs_info(&self) -> cri::ImageFsInfoResponse {
        let timestamp = now_ns();
        let (bytes, inodes) = self.images.fs_usage();
        let containers_dir = self.config.state_dir.join("ctr");
        let dir = containers_dir.clone();
        let (c_bytes, c_inodes) =
            tokio::task::spawn_blocking(move || crate::cgroup_stats::disk_usage(&dir))
                .await
                .unwrap_or((0, 0));
        let usage = |mountpoint: String, bytes: u64, inodes: u64| cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier { mountpoint }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        };
        cri::ImageFsInfoResponse {
            image_filesystems: vec![usage(
                self.images.root().to_string_lossy().into_owned(),
                bytes,
                inodes,
            )],
            container_filesystems: vec![usage(
                containers_dir.to_string_lossy().into_owned(),
                c_bytes,
                c_inodes,
            )],
        }
    }
}
