//! The CRI v1 gRPC services. Each CRI area lives in its own module as methods
//! on [`Daemon`]; this module wires them to tonic's service traits.
pub mod container;
pub mod events;
pub mod image;
pub mod log_failures;
pub mod runtime_status;
pub mod sandbox;
pub mod stats;

use std::sync::Arc;

use rcrun_proto::cri;
use rcrun_proto::cri::image_service_server::ImageService;
use rcrun_proto::cri::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;

pub type RpcResult<T> = Result<T, Status>;

/// An internal failure, with its whole cause chain in the message.
pub fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

pub fn internal_chain(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

/// A required ID field: empty is InvalidArgument (as containerd says).
pub fn require_id<'a>(field: &str, id: &'a str) -> RpcResult<&'a str> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} must not be empty"
        )));
    }
    Ok(id)
}

/// Names go into keys and file names: refuse what cannot be one.
pub fn validate_name(field: &str, name: &str) -> RpcResult<()> {
    if name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} must not be empty"
        )));
    }
    if name.len() > 253 {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than 253 characters"
        )));
    }
    if let Some(bad) = name.chars().find(|c| c.is_control() || *c == '/') {
        return Err(Status::invalid_argument(format!(
            "{field} {name:?} contains the invalid character {bad:?}"
        )));
    }
    Ok(())
}

/// Whether every `selector` label is on `labels`.
pub fn labels_match(
    selector: &std::collections::HashMap<String, String>,
    labels: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The tonic face of the daemon.
#[derive(Clone)]
pub struct Cri(pub Arc<Daemon>);

fn ok<T>(v: T) -> Result<Response<T>, Status> {
    Ok(Response::new(v))
}

/// Runs a call that changes state to its end even when the client goes away.
/// tonic drops a handler's future when the client's deadline passes or it
/// disconnects; a RunPodSandbox or CreateContainer cut short there would
/// skip its own clean-up and leave a half-made object behind. Like
/// containerd's CRI, finish the work; the client finds the result by
/// listing. (PullImage stays cancellable: nothing is kept from a cut pull.)
async fn to_completion<T, F>(work: F) -> RpcResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = RpcResult<T>> + Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| Status::internal(format!("request handler failed: {e}")))?
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(
        &self,
        _r: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        ok(self.0.version())
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let id = to_completion(self.0.clone().run_pod_sandbox(r.into_inner())).await?;
        ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let (daemon, id) = (self.0.clone(), r.into_inner().pod_sandbox_id);
        to_completion(async move { daemon.stop_pod_sandbox(&id).await }).await?;
        ok(cri::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let (daemon, id) = (self.0.clone(), r.into_inner().pod_sandbox_id);
        to_completion(async move { daemon.remove_pod_sandbox(&id).await }).await?;
        ok(cri::RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let r = r.into_inner();
        ok(self
            .0
            .pod_sandbox_status(&r.pod_sandbox_id, r.verbose)
            .await?)
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        ok(cri::ListPodSandboxResponse {
            items: self.0.list_pod_sandbox(r.into_inner().filter),
        })
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let id = to_completion(self.0.clone().create_container(r.into_inner())).await?;
        ok(cri::CreateContainerResponse { container_id: id })
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let (daemon, id) = (self.0.clone(), r.into_inner().container_id);
        to_completion(async move { daemon.start_container(&id).await }).await?;
        ok(cri::StartContainerResponse {})
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let (daemon, r) = (self.0.clone(), r.into_inner());
        to_completion(async move { daemon.stop_container(&r.container_id, r.timeout).await })
            .await?;
        ok(cri::StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let (daemon, id) = (self.0.clone(), r.into_inner().container_id);
        to_completion(async move { daemon.remove_container(&id).await }).await?;
        ok(cri::RemoveContainerResponse {})
    }

    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        ok(cri::ListContainersResponse {
            containers: self.0.list_containers(r.into_inner().filter),
        })
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let r = r.into_inner();
        ok(self
            .0
            .container_status_response(&r.container_id, r.verbose)?)
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let (daemon, r) = (self.0.clone(), r.into_inner());
        to_completion(async move { daemon.update_container_resources(r).await }).await?;
        ok(cri::UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        self.0
            .reopen_container_log(&r.into_inner().container_id)
            .await?;
        ok(cri::ReopenContainerLogResponse {})
    }

    async fn exec_sync(
        &self,
        r: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        ok(self.0.exec_sync(r.into_inner()).await?)
    }

    async fn exec(
        &self,
        r: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        ok(self.0.exec_url(r.into_inner())?)
    }

    async fn attach(
        &self,
        r: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        ok(self.0.attach_url(r.into_inner())?)
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        ok(self.0.port_forward_url(r.into_inner())?)
    }

    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let stats = self.0.container_stats(&r.into_inner().container_id).await?;
        ok(cri::ContainerStatsResponse { stats: Some(stats) })
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        ok(cri::ListContainerStatsResponse {
            stats: self.0.list_container_stats(r.into_inner().filter).await,
        })
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let stats = self
            .0
            .pod_sandbox_stats(&r.into_inner().pod_sandbox_id)
            .await?;
        ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        ok(cri::ListPodSandboxStatsResponse {
            stats: self.0.list_pod_sandbox_stats(r.into_inner().filter).await,
        })
    }

    async fn update_runtime_config(
        &self,
        r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        self.0.update_runtime_config(r.into_inner());
        ok(cri::UpdateRuntimeConfigResponse {})
    }

    async fn status(
        &self,
        r: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        ok(self.0.status(r.into_inner().verbose))
    }

    async fn checkpoint_container(
        &self,
        _r: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented(
            "CheckpointContainer is not supported by rcrun-cri (no CRIU integration)",
        ))
    }

    type GetContainerEventsStream = events::EventStream;

    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        ok(self.0.event_stream())
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Err(Status::unimplemented(
            "ListMetricDescriptors is not supported by rcrun-cri: use ListPodSandboxStats / ListContainerStats",
        ))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Err(Status::unimplemented(
            "ListPodSandboxMetrics is not supported by rcrun-cri: use ListPodSandboxStats / ListContainerStats",
        ))
    }

    async fn runtime_config(
        &self,
        _r: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        ok(self.0.runtime_config())
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        r: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        ok(cri::ListImagesResponse {
            images: self.0.list_images(r.into_inner().filter),
        })
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        ok(self.0.image_status(r.into_inner())?)
    }

    async fn pull_image(
        &self,
        r: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        ok(self.0.pull_image(r.into_inner()).await?)
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let (daemon, r) = (self.0.clone(), r.into_inner());
        to_completion(async move { daemon.remove_image(r).await }).await?;
        ok(cri::RemoveImageResponse {})
    }

    async fn image_fs_info(
        &self,
        _r: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        ok(self.0.image_fs_info().await)
    }
}
